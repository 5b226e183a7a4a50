import CSodium
import MeshIdentity

/// The libsodium primitives the link and call layers use: X25519, ChaCha20-Poly1305 (IETF), BLAKE2b
/// (randomness comes from the caller: the cores take it injected).
public enum LinkCrypto {
    public static let tagBytes = 16

    /// The X25519 key pair (private, public) of a 32-byte random secret.
    public static func keyPair(secret: [UInt8]) -> (secret: [UInt8], public: [UInt8]) {
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

    /// The AEAD nonce of a transport counter: 4 zero bytes, then the counter little-endian (as WireGuard).
    static func withNonce<R>(_ counter: UInt64, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        var nonce: (UInt64, UInt64) = (0, counter.littleEndian)
        return withUnsafeBytes(of: &nonce) { raw in
            // 8 zero bytes, then the counter: the nonce is the last 12.
            body(raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + 4)
        }
    }

    /// The size of a sealed transport datagram around a body of `bodyBytes`: header, inner type, body, tag.
    static func sealedBytes(body bodyBytes: Int) -> Int { LinkWire.transportHeaderBytes + 1 + bodyBytes + tagBytes }

    /// One transport datagram written into `out` (exactly `sealedBytes(body: body.count)` bytes): `header`, then the
    /// inner type byte and `body`, encrypted in place (libsodium allows the ciphertext over the message), then the tag.
    static func seal(key: [UInt8], counter: UInt64, header: (UInt8, UInt32, UInt64), inner: UInt8, body: UnsafeRawBufferPointer,
                     into out: UnsafeMutableRawBufferPointer) {
        let headerBytes = LinkWire.transportHeaderBytes
        let plainBytes = 1 + body.count
        precondition(out.count == headerBytes + plainBytes + tagBytes)
        out[0] = header.0
        out.storeBytes(of: header.1.bigEndian, toByteOffset: 1, as: UInt32.self)
        out.storeBytes(of: header.2.bigEndian, toByteOffset: 5, as: UInt64.self)
        out[headerBytes] = inner
        if body.count > 0 { UnsafeMutableRawBufferPointer(rebasing: out[(headerBytes + 1)...]).copyMemory(from: body) }
        let base = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var written: UInt64 = 0
        withNonce(counter) { nonce in
            _ = crypto_aead_chacha20poly1305_ietf_encrypt(
                base + headerBytes, &written, base + headerBytes, UInt64(plainBytes), base, UInt64(headerBytes), nil, nonce, key)
        }
    }

    /// Authenticates and decrypts the part of a transport datagram after its header into `plaintext` (resized to
    /// fit, its storage reused); false, with `plaintext` empty, when the tag is wrong.
    static func open(key: [UInt8], counter: UInt64, datagram: UnsafeRawBufferPointer, into plaintext: inout [UInt8]) -> Bool {
        let headerBytes = LinkWire.transportHeaderBytes
        let cipherBytes = datagram.count - headerBytes
        guard cipherBytes >= tagBytes else {
            plaintext.removeAll(keepingCapacity: true)
            return false
        }
        // Resized, not refilled: packets of one size leave it as it is. (One byte at least, so an empty plaintext
        // still has a buffer to point at.)
        let size = max(cipherBytes - tagBytes, 1)
        if plaintext.count > size {
            plaintext.removeLast(plaintext.count - size)
        } else {
            plaintext.append(contentsOf: repeatElement(0, count: size - plaintext.count))
        }
        let d = datagram.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var written: UInt64 = 0
        let rc = plaintext.withUnsafeMutableBufferPointer { out in
            withNonce(counter) { nonce in
                crypto_aead_chacha20poly1305_ietf_decrypt(
                    out.baseAddress, &written, nil, d + headerBytes, UInt64(cipherBytes), d, UInt64(headerBytes), nonce, key)
            }
        }
        plaintext.removeLast(plaintext.count - (rc == 0 ? cipherBytes - tagBytes : 0))
        return rc == 0
    }
}
