// The Kotlin bindings end to end against a running push-service: signers over
// non-exportable keys (SealedKeystore), register, status, rotate, the direct
// channel, the inbox opened through a keystore Decrypter, a refused call as a
// typed exception, delete. Any failed check exits non-zero.
//
//   ClientTest <base URL> <app> <push-service binary> <notifier key> <notifier id>
package pushservice.clienttest

import java.math.BigInteger
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.security.KeyFactory
import java.security.KeyPairGenerator
import java.security.PublicKey
import java.security.Signature
import java.security.interfaces.ECPublicKey
import java.security.interfaces.RSAPublicKey
import java.security.spec.ECGenParameterSpec
import java.security.spec.ECPoint
import java.security.spec.ECPublicKeySpec
import java.util.Base64
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicInteger
import javax.crypto.KeyAgreement
import kotlin.system.exitProcess
import kotlinx.coroutines.async
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import pushservice.client.ClientOptions
import pushservice.client.Decrypter
import pushservice.client.KeystoreException
import pushservice.client.NewRegistration
import pushservice.client.PushClient
import pushservice.client.PushClientException
import pushservice.client.Signer

fun b64u(bytes: ByteArray): String = Base64.getUrlEncoder().withoutPadding().encodeToString(bytes)
fun unb64u(text: String): ByteArray = Base64.getUrlDecoder().decode(text)

/** A big-endian unsigned integer, left-padded to `size` bytes when given. */
fun unsigned(n: BigInteger, size: Int = 0): ByteArray {
    val bytes = n.toByteArray().dropWhile { it == 0.toByte() }.toByteArray()
    return if (bytes.size >= size) bytes else ByteArray(size - bytes.size) + bytes
}

fun publicJwk(key: PublicKey, extra: String = ""): String = when (key) {
    is ECPublicKey ->
        """{"kty":"EC","crv":"P-256","x":"${b64u(unsigned(key.w.affineX, 32))}","y":"${b64u(unsigned(key.w.affineY, 32))}"$extra}"""
    is RSAPublicKey ->
        """{"kty":"RSA","n":"${b64u(unsigned(key.modulus))}","e":"${b64u(unsigned(key.publicExponent))}"$extra}"""
    else -> error("unexpected key ${key.algorithm}")
}

fun field(json: String, name: String): String? = Regex("\"$name\"\\s*:\\s*\"([^\"]*)\"").find(json)?.groupValues?.get(1)

/** The device key, in SealedKeystore: the app's Signer, and a record of what was asked of it. */
class KeystoreSigner(kind: String) : Signer {
    private val keys = SealedKeystore.generate(kind)
    private val ec = kind == "EC"
    val calls = ConcurrentHashMap<String, AtomicInteger>()
    private fun count(name: String) = calls.computeIfAbsent(name) { AtomicInteger() }.incrementAndGet()

    override fun algorithm(): String { count("algorithm"); return if (ec) "ES256" else "RS256" }
    override fun publicJwk(): String { count("publicJwk"); return publicJwk(keys.first) }
    override fun sign(message: ByteArray): ByteArray {
        count("sign")
        return Signature.getInstance(if (ec) "SHA256withECDSA" else "SHA256withRSA", SealedKeystore).run {
            initSign(keys.second)
            update(message)
            sign()
        }
    }
}

/** A careless signer that puts its private exponent in the public JWK. */
class LeakySigner : Signer {
    private val pair = KeyPairGenerator.getInstance("RSA").apply { initialize(2048) }.generateKeyPair()
    override fun algorithm() = "RS256"
    override fun publicJwk() = publicJwk(pair.public, ""","d":"${b64u(unsigned((pair.private as java.security.interfaces.RSAPrivateKey).privateExponent))}"""")
    override fun sign(message: ByteArray): ByteArray = error("a refused signer is never asked to sign")
}

/** The encryption key (P-256, ECDH-ES+A256KW): the keystore does the agreement. */
class EcdhDecrypter : Decrypter {
    private val pair = KeyPairGenerator.getInstance("EC").apply { initialize(ECGenParameterSpec("secp256r1")) }.generateKeyPair()
    val jwk = publicJwk(pair.public, ""","use":"enc","alg":"ECDH-ES+A256KW"""")

    override fun rsaOaep256(encryptedKey: ByteArray): ByteArray =
        throw KeystoreException.Failed("this is an EC key")

    override fun agree(ephemeralPublicJwk: String): ByteArray {
        val point = ECPoint(
            BigInteger(1, unb64u(field(ephemeralPublicJwk, "x")!!)),
            BigInteger(1, unb64u(field(ephemeralPublicJwk, "y")!!)),
        )
        val params = (pair.public as ECPublicKey).params
        val ephemeral = KeyFactory.getInstance("EC").generatePublic(ECPublicKeySpec(point, params))
        return KeyAgreement.getInstance("ECDH").run {
            init(pair.private)
            doPhase(ephemeral, true)
            generateSecret()
        }
    }
}

/** The auth server's side: tokens from `push-service token`, notifications over HTTP. */
class AuthServer(val base: String, val app: String, val service: String, val key: String, val notifier: String) {
    private val http = HttpClient.newHttpClient()

    private fun token(scope: String): String {
        val process = ProcessBuilder(service, "token", "--key", key, "--notifier", notifier, "--kid", "k1",
            "--audience", base, "--scope", scope).redirectErrorStream(true).start()
        val out = process.inputStream.readBytes().decodeToString().trim()
        check(process.waitFor() == 0) { "push-service token: $out" }
        return out
    }

    fun notify(body: String): String {
        val request = HttpRequest.newBuilder(URI("$base/v1/apps/$app/notifications"))
            .header("Authorization", "Bearer ${token("notify")}")
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body)).build()
        val response = http.send(request, HttpResponse.BodyHandlers.ofString())
        check(response.statusCode() == 202) { "notify: ${response.statusCode()} ${response.body()}" }
        return field(response.body(), "id")!!
    }
}

fun randomToken(): String {
    val alphabet = ('A'..'Z') + ('a'..'z') + ('0'..'9')
    return (1..64).map { alphabet.random() }.joinToString("")
}

var steps = 0
fun ok(what: String) { steps++; println("ok $steps - $what") }

suspend fun refused(what: String, call: suspend () -> Unit): PushClientException.Problem {
    try {
        call()
    } catch (problem: PushClientException.Problem) {
        return problem
    }
    error("$what: the call was not refused")
}

fun test(args: Array<String>) = runBlocking {
    val (base, app, service, notifierKey, notifierId) = args
    val auth = AuthServer(base, app, service, notifierKey, notifierId)

    for (kind in listOf("EC", "RSA")) {
        val alg = if (kind == "EC") "ES256" else "RS256"
        val signer = KeystoreSigner(kind)
        val client = PushClient(base, signer, ClientOptions())
        val decrypter = EcdhDecrypter()

        val fcm = client.register(app, NewRegistration(provider = "fcm", token = randomToken(), platform = "android"))
        check(fcm.provider == "fcm" && fcm.status == "active") { "$fcm" }
        val direct = client.register(app, NewRegistration(provider = "direct", token = null, platform = "linux",
            encryptionKey = decrypter.jwk))
        check(direct.encryptionKeyThumbprint != null) { "$direct" }
        ok("$alg: registered ${fcm.provider} and ${direct.provider}, DPoP signed by the keystore signer")

        val status = client.status(fcm.id)
        check(status.id == fcm.id && status.app == app && status.platform == "android") { "$status" }
        ok("$alg: status")

        val rotated = client.rotate(fcm.id, randomToken())
        check(rotated.id == fcm.id && rotated.status == "active") { "$rotated" }
        ok("$alg: token rotated")

        val listener = client.listen(direct.id, null)
        val next = async { withTimeout(30_000) { listener.next() } }
        val sent = auth.notify("""{"targets":{"registrations":["${direct.id}"]},"notification":{"title":"Sign in?","body":"from kotlin $alg"}}""")
        val event = next.await()
        check(event.notificationId == sent && event.body == "from kotlin $alg") { "$event" }
        ok("$alg: notification $sent received on the direct channel")

        // The app goes to the background while a next() waits: disconnect ends
        // it; the next call reconnects after the last event and misses nothing.
        val waiting = async { runCatching { listener.next() } }
        delay(300)
        listener.disconnect()
        val ended = withTimeout(10_000) { waiting.await() }
        check(ended.exceptionOrNull() is PushClientException.Disconnected) { "$ended" }
        val meanwhile = auth.notify("""{"targets":{"registrations":["${direct.id}"]},"notification":{"title":"Still there?"}}""")
        val resumed = withTimeout(30_000) { listener.next() }
        check(resumed.notificationId == meanwhile && listener.lastEventId() == resumed.eventId) { "$resumed" }
        ok("$alg: disconnect ended a waiting next(); the next one reconnected and got $meanwhile")

        val marker = "kotlin-sealed-$alg-${randomToken()}"
        val withContent = auth.notify("""{"targets":{"registrations":["${direct.id}"]},"content":{"media_type":"application/json","data":{"request":"sign","marker":"$marker"}}}""")
        val items = client.inbox(direct.id)
        check(items.map { it.id } == listOf(withContent)) { "$items" }
        val content = client.fetch(direct.id, withContent, decrypter)
        check(content.mediaType == "application/json" && content.dataJson!!.contains(marker)) { "$content" }
        client.ack(direct.id, withContent)
        check(client.inbox(direct.id).isEmpty())
        ok("$alg: inbox item fetched, opened by the keystore decrypter (ECDH), acked")

        val other = PushClient(base, KeystoreSigner("EC"), ClientOptions())
        val problem = refused("another device key reading the registration") { other.status(fcm.id) }
        check(problem.problemType.startsWith("urn:push-service:problem:") && problem.status.toInt() in 400..499) { "$problem" }
        ok("$alg: another key refused: PushClientException.Problem ${problem.status} ${problem.problemType}")

        client.delete(fcm.id)
        client.delete(direct.id)
        val gone = refused("status of a deleted registration") { client.status(fcm.id) }
        check(gone.status.toInt() == 404 && gone.problemType.endsWith(":not-found")) { "$gone" }
        ok("$alg: deleted (status then 404 ${gone.problemType})")

        // What the client asked of the signer: its algorithm and public JWK once, then signatures.
        val asked = signer.calls.mapValues { it.value.get() }
        check(asked.keys == setOf("algorithm", "publicJwk", "sign")) { "$asked" }
        check(asked["algorithm"] == 1 && asked["publicJwk"] == 1 && asked.getValue("sign") >= 9) { "$asked" }
        ok("$alg: the signer was asked only for ${asked.toSortedMap()}")
    }

    check(SealedKeystore.exportAttempts.get() == 0) { "a private key's bytes were asked for" }
    ok("no private key's bytes were asked for (exportAttempts = 0)")

    try {
        PushClient(base, LeakySigner(), ClientOptions())
        error("a signer whose JWK holds `d` was taken")
    } catch (refusal: PushClientException.Key) {
        check(refusal.detail.contains("private member `d`")) { refusal.detail }
    }
    ok("a signer whose public JWK holds a private member is refused before anything is sent")
    println("1..$steps")
}

fun main(args: Array<String>) {
    try {
        test(args)
    } catch (failure: Throwable) {
        System.err.println("not ok - $failure")
        failure.printStackTrace()
        exitProcess(1)
    }
    exitProcess(0)
}
