// The device key and the encryption key of an Android app, made in the
// Android Keystore (StrongBox where the device has it) and never leaving it:
// the client asks the Signer for its algorithm, its public JWK and signatures,
// and the Decrypter for one ECDH agreement per sealed item.
//
// Not compiled in this repository's CI (no Android SDK there); written against
// android.security.keystore (API 23+; key agreement in the Keystore: API 31+).
// The Keystore's RSA-OAEP uses MGF1 with SHA-1 only, which RSA-OAEP-256 does
// not allow: on Android, register a P-256 encryption key (ECDH-ES+A256KW).
package com.example.app.push

import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import java.math.BigInteger
import java.security.GeneralSecurityException
import java.security.KeyFactory
import java.security.KeyPairGenerator
import java.security.KeyStore
import java.security.PrivateKey
import java.security.Signature
import java.security.interfaces.ECPublicKey
import java.security.spec.ECGenParameterSpec
import java.security.spec.ECPoint
import java.security.spec.ECPublicKeySpec
import java.util.Base64
import javax.crypto.KeyAgreement
import pushservice.client.Decrypter
import pushservice.client.KeystoreException
import pushservice.client.Signer

private fun b64u(bytes: ByteArray) = Base64.getUrlEncoder().withoutPadding().encodeToString(bytes)

private fun coordinate(n: BigInteger): ByteArray {
    val bytes = n.toByteArray().dropWhile { it == 0.toByte() }.toByteArray()
    return ByteArray(32 - bytes.size) + bytes
}

private fun jwk(key: ECPublicKey, extra: String = "") =
    """{"kty":"EC","crv":"P-256","x":"${b64u(coordinate(key.w.affineX))}","y":"${b64u(coordinate(key.w.affineY))}"$extra}"""

private fun keystore() = KeyStore.getInstance("AndroidKeyStore").apply { load(null) }

private fun generate(alias: String, purpose: Int) {
    KeyPairGenerator.getInstance(KeyProperties.KEY_ALGORITHM_EC, "AndroidKeyStore").apply {
        initialize(
            KeyGenParameterSpec.Builder(alias, purpose)
                .setAlgorithmParameterSpec(ECGenParameterSpec("secp256r1"))
                .setDigests(KeyProperties.DIGEST_SHA256)
                .build()
        )
    }.generateKeyPair()
}

/** ES256 with a key under `alias` in the Android Keystore (made on first use). */
class AndroidKeystoreSigner(private val alias: String = "push-device-key") : Signer {
    private val store = keystore()

    init {
        if (!store.containsAlias(alias)) generate(alias, KeyProperties.PURPOSE_SIGN)
    }

    override fun algorithm() = "ES256"

    override fun publicJwk() = jwk(store.getCertificate(alias).publicKey as ECPublicKey)

    override fun sign(message: ByteArray): ByteArray = try {
        Signature.getInstance("SHA256withECDSA").run {
            initSign(store.getKey(alias, null) as PrivateKey)
            update(message)
            sign() // DER; the client turns it into the JWS form
        }
    } catch (e: GeneralSecurityException) {
        throw KeystoreException.Failed("Android Keystore: ${e.message}")
    }
}

/** ECDH-ES+A256KW with a key under `alias` in the Android Keystore (API 31+). */
class AndroidKeystoreDecrypter(private val alias: String = "push-encryption-key") : Decrypter {
    private val store = keystore()

    init {
        if (!store.containsAlias(alias)) generate(alias, KeyProperties.PURPOSE_AGREE_KEY)
    }

    /** Register this as the registration's `encryptionKey`. */
    val publicJwk: String
        get() = jwk(store.getCertificate(alias).publicKey as ECPublicKey, ""","use":"enc","alg":"ECDH-ES+A256KW"""")

    override fun rsaOaep256(encryptedKey: ByteArray): ByteArray =
        throw KeystoreException.Failed("this key is P-256 (ECDH-ES+A256KW)")

    override fun agree(ephemeralPublicJwk: String): ByteArray = try {
        fun member(name: String) = BigInteger(1, Base64.getUrlDecoder().decode(
            Regex("\"$name\"\\s*:\\s*\"([^\"]+)\"").find(ephemeralPublicJwk)!!.groupValues[1]))
        val own = store.getCertificate(alias).publicKey as ECPublicKey
        val ephemeral = KeyFactory.getInstance("EC")
            .generatePublic(ECPublicKeySpec(ECPoint(member("x"), member("y")), own.params))
        KeyAgreement.getInstance("ECDH", "AndroidKeyStore").run {
            init(store.getKey(alias, null) as PrivateKey)
            doPhase(ephemeral, true)
            generateSecret()
        }
    } catch (e: GeneralSecurityException) {
        throw KeystoreException.Failed("Android Keystore: ${e.message}")
    }
}

// Wiring, in the app's FirebaseMessagingService:
//
//   override fun onNewToken(token: String) {
//       scope.launch {
//           val id = prefs.getString("push.registration", null)
//           if (id != null) client.rotate(id, token)
//           else prefs.edit().putString("push.registration", client.register("app_123",
//               NewRegistration(provider = "fcm", token = token, platform = "android",
//                   encryptionKey = decrypter.publicJwk)).id).apply()
//       }
//   }
//
// with `val client = PushClient("https://push.example.com", AndroidKeystoreSigner(), ClientOptions())`.
