// The device key and the encryption key of an iOS or macOS app, made in the
// Secure Enclave and never leaving it: PushClient asks the Signer for its
// algorithm, its public JWK and signatures, and the Decrypter for one ECDH
// agreement per sealed item — never for key bytes.
//
// Not compiled in this repository's CI (no Swift toolchain there); written
// against CryptoKit's SecureEnclave.P256 API (iOS 13+, macOS 10.15+).
import CryptoKit
import Foundation
import PushClient

private func base64url(_ data: Data) -> String {
    data.base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

private func fromBase64url(_ text: String) -> Data? {
    var b64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    b64 += String(repeating: "=", count: (4 - b64.count % 4) % 4)
    return Data(base64Encoded: b64)
}

/// A P-256 public key as a JWK: x963 is 0x04 ‖ X ‖ Y.
private func jwk(x963: Data, extra: String = "") -> String {
    let x = x963.subdata(in: 1..<33), y = x963.subdata(in: 33..<65)
    return #"{"kty":"EC","crv":"P-256","x":"\#(base64url(x))","y":"\#(base64url(y))"\#(extra)}"#
}

private func accessControl() throws -> SecAccessControl {
    var error: Unmanaged<CFError>?
    guard let access = SecAccessControlCreateWithFlags(
        nil, kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly, .privateKeyUsage, &error
    ) else {
        throw KeystoreError.Failed(detail: "access control: \(String(describing: error))")
    }
    return access
}

/// ES256 with a Secure Enclave key. `handle` is an opaque blob only this
/// device's Secure Enclave can use: keep it in the keychain to find the key again.
final class SecureEnclaveSigner: Signer {
    private let key: SecureEnclave.P256.Signing.PrivateKey

    init(handle: Data? = nil) throws {
        if let handle {
            key = try SecureEnclave.P256.Signing.PrivateKey(dataRepresentation: handle)
        } else {
            key = try SecureEnclave.P256.Signing.PrivateKey(accessControl: accessControl())
        }
    }

    var handle: Data { key.dataRepresentation }

    func algorithm() throws -> String { "ES256" }

    func publicJwk() throws -> String { jwk(x963: key.publicKey.x963Representation) }

    func sign(message: Data) throws -> Data {
        do {
            return try key.signature(for: message).derRepresentation
        } catch {
            throw KeystoreError.Failed(detail: "Secure Enclave signing: \(error)")
        }
    }
}

/// ECDH-ES+A256KW with a Secure Enclave key: register `publicJwk` as the
/// registration's encryption key; the agreement happens in the enclave.
final class SecureEnclaveDecrypter: Decrypter {
    private let key: SecureEnclave.P256.KeyAgreement.PrivateKey

    init(handle: Data? = nil) throws {
        if let handle {
            key = try SecureEnclave.P256.KeyAgreement.PrivateKey(dataRepresentation: handle)
        } else {
            key = try SecureEnclave.P256.KeyAgreement.PrivateKey(accessControl: accessControl())
        }
    }

    var handle: Data { key.dataRepresentation }

    var publicJwk: String {
        jwk(x963: key.publicKey.x963Representation, extra: #","use":"enc","alg":"ECDH-ES+A256KW""#)
    }

    func rsaOaep256(encryptedKey: Data) throws -> Data {
        throw KeystoreError.Failed(detail: "the Secure Enclave holds P-256 keys only")
    }

    func agree(ephemeralPublicJwk: String) throws -> Data {
        guard let object = try JSONSerialization.jsonObject(with: Data(ephemeralPublicJwk.utf8)) as? [String: Any],
              let x = (object["x"] as? String).flatMap(fromBase64url),
              let y = (object["y"] as? String).flatMap(fromBase64url) else {
            throw KeystoreError.Failed(detail: "the ephemeral key is not a P-256 JWK")
        }
        let ephemeral = try P256.KeyAgreement.PublicKey(x963Representation: Data([0x04]) + x + y)
        let secret = try key.sharedSecretFromKeyAgreement(with: ephemeral)
        return secret.withUnsafeBytes { Data($0) }
    }
}

// Wiring, in the app delegate:
//
//   let signer = try SecureEnclaveSigner(handle: keychain["push.device-key"])
//   let client = try PushClient(baseUrl: "https://push.example.com", signer: signer,
//                               options: ClientOptions())
//
//   func application(_ application: UIApplication,
//                    didRegisterForRemoteNotificationsWithDeviceToken deviceToken: Data) {
//       let token = deviceToken.map { String(format: "%02x", $0) }.joined()
//       Task {
//           if let id = keychain["push.registration"] {
//               _ = try await client.rotate(registration: id, token: token)
//           } else {
//               let registration = try await client.register(app: "app_123", registration: NewRegistration(
//                   provider: "apns", token: token, platform: "ios", environment: "production",
//                   encryptionKey: decrypter.publicJwk, attestation: nil))
//               keychain["push.registration"] = registration.id
//           }
//       }
//   }
