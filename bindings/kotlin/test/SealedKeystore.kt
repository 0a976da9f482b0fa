// A JCA keystore whose private keys never leave it, as the Android Keystore
// behaves: a key's getEncoded() gives nothing (and counts the attempt), and
// only this provider's Signature engine can sign with it. The test's signers
// hold such keys, so a client that wanted key bytes could not have them.
package pushservice.clienttest

import java.security.InvalidKeyException
import java.security.KeyPair
import java.security.KeyPairGenerator
import java.security.PrivateKey
import java.security.Provider
import java.security.PublicKey
import java.security.Signature
import java.security.SignatureSpi
import java.security.spec.ECGenParameterSpec
import java.util.concurrent.atomic.AtomicInteger

object SealedKeystore : Provider("SealedKeystore", "1.0", "non-exportable keys for the binding test") {
    private fun readResolve(): Any = SealedKeystore

    /** Every attempt to read a private key's bytes, from anywhere. */
    val exportAttempts = AtomicInteger()

    init {
        for (name in listOf("SHA256withECDSA", "SHA256withRSA", "SHA512withRSA")) {
            putService(object : Provider.Service(this, "Signature", name, SealedSignature::class.java.name, null, null) {
                override fun newInstance(constructorParameter: Any?): Any = SealedSignature(name)
            })
        }
    }

    /** A P-256 key (ES256) or an RSA key of `bits` (RS256), made inside the keystore. */
    fun generate(kind: String, bits: Int = 2048): Pair<PublicKey, PrivateKey> {
        val pair: KeyPair = when (kind) {
            "EC" -> KeyPairGenerator.getInstance("EC").apply { initialize(ECGenParameterSpec("secp256r1")) }.generateKeyPair()
            else -> KeyPairGenerator.getInstance("RSA").apply { initialize(bits) }.generateKeyPair()
        }
        return pair.public to SealedKey(pair.private)
    }
}

/** A handle on a private key inside [SealedKeystore]: no bytes come out. */
class SealedKey internal constructor(internal val inside: PrivateKey) : PrivateKey {
    override fun getAlgorithm(): String = inside.algorithm
    override fun getFormat(): String? = null
    override fun getEncoded(): ByteArray? {
        SealedKeystore.exportAttempts.incrementAndGet()
        return null
    }
}

class SealedSignature(private val name: String) : SignatureSpi() {
    private var engine: Signature? = null

    override fun engineInitSign(privateKey: PrivateKey) {
        val key = privateKey as? SealedKey ?: throw InvalidKeyException("not a key of this keystore")
        engine = Signature.getInstance(name).apply { initSign(key.inside) }
    }

    override fun engineInitVerify(publicKey: PublicKey) = throw InvalidKeyException("sign only")
    override fun engineUpdate(b: Byte) = engine!!.update(b)
    override fun engineUpdate(b: ByteArray, off: Int, len: Int) = engine!!.update(b, off, len)
    override fun engineSign(): ByteArray = engine!!.sign()
    override fun engineVerify(sigBytes: ByteArray): Boolean = throw UnsupportedOperationException()

    @Deprecated("JCA legacy") override fun engineSetParameter(param: String?, value: Any?) = throw UnsupportedOperationException()
    @Deprecated("JCA legacy") override fun engineGetParameter(param: String?): Any = throw UnsupportedOperationException()
}
