import CSecp256k1
import MeshWire

/// A recoverable ECDSA signature in Ethereum's 65-byte layout: r (32) || s (32) || v, with v = 27 or 28.
///
/// Only canonical signatures are accepted: r and s non-zero and below the group order, and s in the lower
/// half of the order (as EIP-2 requires of transactions), so no signature has a second valid encoding.
public struct Signature: Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 65

    public let bytes: [UInt8]

    /// Nil when `bytes` is not a canonical signature (see `init(validating:)`).
    public init?(bytes: [UInt8]) {
        guard let signature = try? Signature(validating: bytes) else { return nil }
        self = signature
    }

    /// Checks length, v (0 and 1 are normalised to 27 and 28), the range of r and s, and low s.
    public init(validating bytes: [UInt8]) throws(IdentityError) {
        guard bytes.count == Self.byteCount else {
            throw IdentityError(.invalidInput, "a signature is 65 bytes (r, s, v), not \(bytes.count)")
        }
        var normalised = bytes
        switch bytes[64] {
        case 0, 1: normalised[64] += 27
        case 27, 28: break
        default: throw IdentityError(.invalidInput, "signature v is \(bytes[64]); expected 27 or 28 (or 0 or 1)")
        }
        guard bytes[0..<32].contains(where: { $0 != 0 }), bytes[32..<64].contains(where: { $0 != 0 }) else {
            throw IdentityError(.invalidInput, "signature r or s is zero")
        }
        var parsed = secp256k1_ecdsa_recoverable_signature()
        guard secp256k1_ecdsa_recoverable_signature_parse_compact(
            Crypto.secp256k1, &parsed, bytes, Int32(normalised[64] - 27)) == 1
        else { throw IdentityError(.invalidInput, "signature r or s is not below the secp256k1 group order") }
        var plain = secp256k1_ecdsa_signature()
        secp256k1_ecdsa_recoverable_signature_convert(Crypto.secp256k1, &plain, &parsed)
        guard secp256k1_ecdsa_signature_normalize(Crypto.secp256k1, nil, &plain) == 0 else {
            throw IdentityError(.invalidInput, "signature s is in the upper half of the group order (not canonical)")
        }
        self.bytes = normalised
    }

    /// Parses hex (with or without `0x`) and validates it like `init(validating:)`.
    public init(parsing text: String) throws(IdentityError) {
        guard let bytes = Hex.decode(text) else {
            throw IdentityError(.invalidInput, "signature is not hex")
        }
        try self.init(validating: bytes)
    }

    /// A signature produced by libsecp256k1 here: already canonical, v already 27 or 28.
    init(trusted bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// The public key that produced this signature over the 32-byte `digest`; nil if there is none
    /// or `digest` is not 32 bytes.
    public func recoverPublicKey(digest: [UInt8]) -> PublicKey? {
        guard digest.count == 32 else { return nil }
        var parsed = secp256k1_ecdsa_recoverable_signature()
        var point = secp256k1_pubkey()
        guard secp256k1_ecdsa_recoverable_signature_parse_compact(
                  Crypto.secp256k1, &parsed, bytes, Int32(bytes[64] - 27)) == 1,
              secp256k1_ecdsa_recover(Crypto.secp256k1, &point, &parsed, digest) == 1
        else { return nil }
        return PublicKey(point: point)
    }

    /// The address of the key that produced this signature over `digest`.
    public func recoverAddress(digest: [UInt8]) -> WalletAddress? {
        recoverPublicKey(digest: digest)?.address
    }

    /// `0x` and the 65 bytes in hex, as `personal_sign` prints them.
    public var description: String { "0x" + Hex.encode(bytes) }
}
