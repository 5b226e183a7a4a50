import CSecp256k1
import MeshWire

/// A secp256k1 private key. The scalar lives in a buffer of its own that is zeroed when the last copy
/// of the key is released.
public struct PrivateKey: Sendable {
    private let secret: SecretBox
    public let publicKey: PublicKey
    public let address: WalletAddress

    /// A fresh random key from the system CSPRNG.
    public init() {
        while true {
            var candidate = Crypto.randomBytes(32)
            defer { Secrets.wipe(&candidate) }
            if let key = try? PrivateKey(bytes: candidate) {
                self = key
                return
            }
        }
    }

    /// A key from its 32-byte big-endian scalar, which must be in 1 ..< n (the group order).
    public init(bytes: [UInt8]) throws(IdentityError) {
        guard bytes.count == 32 else {
            throw IdentityError(.invalidInput, "a private key is 32 bytes (64 hex digits), not \(bytes.count)")
        }
        guard secp256k1_ec_seckey_verify(Crypto.secp256k1, bytes) == 1 else {
            throw IdentityError(.invalidInput, "private key is zero or not below the secp256k1 group order")
        }
        var point = secp256k1_pubkey()
        guard secp256k1_ec_pubkey_create(Crypto.secp256k1, &point, bytes) == 1 else {
            throw IdentityError(.invalidInput, "private key has no public key")
        }
        secret = SecretBox(copying: bytes)
        publicKey = PublicKey(point: point)
        address = publicKey.address
    }

    /// A key from 64 hex digits (an optional `0x` prefix is accepted).
    public init(hex: String) throws(IdentityError) {
        guard var bytes = Hex.decode(hex) else {
            throw IdentityError(.invalidInput, "a private key is 64 hex digits")
        }
        defer { Secrets.wipe(&bytes) }
        try self.init(bytes: bytes)
    }

    /// A copy of the 32-byte scalar; wipe it (`Secrets.wipe`) when done.
    public var bytes: [UInt8] {
        secret.withUnsafePointer { Array(UnsafeBufferPointer(start: $0, count: secret.count)) }
    }

    /// A recoverable ECDSA signature over a 32-byte digest: RFC 6979 deterministic nonce, low s, v = 27 or 28.
    /// - Precondition: `digest.count == 32`.
    public func sign(digest: [UInt8]) -> Signature {
        precondition(digest.count == 32, "sign(digest:) takes a 32-byte digest")
        var signature = secp256k1_ecdsa_recoverable_signature()
        let signed = secret.withUnsafePointer { scalar in
            secp256k1_ecdsa_sign_recoverable(Crypto.secp256k1, &signature, digest, scalar, nil, nil)
        }
        precondition(signed == 1, "secp256k1 signing failed with a verified key")
        var out = [UInt8](repeating: 0, count: Signature.byteCount)
        var recoveryID: Int32 = 0
        secp256k1_ecdsa_recoverable_signature_serialize_compact(Crypto.secp256k1, &out, &recoveryID, &signature)
        out[64] = 27 + UInt8(recoveryID)
        return Signature(trusted: out)
    }

    /// Signs `message` the way Ethereum wallets' `personal_sign` does (EIP-191 version 0x45).
    public func personalSign(message: [UInt8]) -> Signature {
        sign(digest: PersonalSign.digest(message: message))
    }
}
