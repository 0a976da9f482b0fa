// Signatures of the two android.security.keystore classes the Android example
// uses, so that run.sh can type-check the example against the generated
// bindings without an Android SDK. Never run: on a device these are Android's.
package android.security.keystore

import java.security.spec.AlgorithmParameterSpec

class KeyGenParameterSpec private constructor() : AlgorithmParameterSpec {
    class Builder(keystoreAlias: String, purposes: Int) {
        fun setAlgorithmParameterSpec(spec: AlgorithmParameterSpec): Builder = this
        fun setDigests(vararg digests: String): Builder = this
        fun build(): KeyGenParameterSpec = KeyGenParameterSpec()
    }
}

object KeyProperties {
    const val KEY_ALGORITHM_EC = "EC"
    const val PURPOSE_SIGN = 4
    const val PURPOSE_AGREE_KEY = 64
    const val DIGEST_SHA256 = "SHA-256"
}
