import CSodium
import MeshIdentity

/// The libsodium primitives the link and call layers use: X25519, ChaCha20-Poly1305 (IETF), BLAKE2b
/// (randomness comes from `SecureRandom`).
public enum LinkCrypto {
    public static let tagBytes = 16

    /// A fresh X25519 key pair (private, public).
    public static func ephemeralKeyPair() -> (secret: [UInt8], public: [UInt8]) {
        let secret = SecureRandom.bytes(32)
        var pub = [UInt8](repeating: 0, count: 32)
        _ = crypto_scalarmult_base(&pub, secret)
        return (secret, pub)
    }

    /// X25519; nil for a low-order peer key (all-zero shared secret).
    public static func sharedSecret(secret: [UInt8], peerPublic: [UInt8]) -> [UInt8]? {
        guard peerPublic.count == 32 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        guard crypto_scalarmult(&out, secret, peerPublic) == 0 else { return nil }
        return out
    }

    /// Keyed BLAKE2b with an output of `length` bytes.
    public static func hash(_ message: [UInt8], key: [UInt8] = [], length: Int = 32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        _ = key.withUnsafeBufferPointer { k in
            crypto_generichash(&out, length, message, UInt64(message.count), k.baseAddress, k.count)
        }
        return out
    }

    public static func nonce(_ counter: UInt64) -> [UInt8] {
        var n = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { n[4 + i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
        return n
    }

    public static func seal(key: [UInt8], counter: UInt64, header: [UInt8], plaintext: [UInt8]) -> [UInt8] {
        var out = header
        let start = out.count
        out.append(contentsOf: [UInt8](repeating: 0, count: plaintext.count + tagBytes))
        var written: UInt64 = 0
        let n = nonce(counter)
        out.withUnsafeMutableBufferPointer { buf in
            _ = crypto_aead_chacha20poly1305_ietf_encrypt(
                buf.baseAddress! + start, &written, plaintext, UInt64(plaintext.count),
                header, UInt64(header.count), nil, n, key)
        }
        return out
    }

    public static func open(key: [UInt8], counter: UInt64, header: ArraySlice<UInt8>, ciphertext: ArraySlice<UInt8>) -> [UInt8]? {
        guard ciphertext.count >= tagBytes else { return nil }
        var out = [UInt8](repeating: 0, count: ciphertext.count - tagBytes)
        var written: UInt64 = 0
        let n = nonce(counter)
        let rc = header.withUnsafeBufferPointer { h in
            ciphertext.withUnsafeBufferPointer { c in
                crypto_aead_chacha20poly1305_ietf_decrypt(
                    &out, &written, nil, c.baseAddress!, UInt64(c.count), h.baseAddress, UInt64(h.count), n, key)
            }
        }
        return rc == 0 ? out : nil
    }
}
