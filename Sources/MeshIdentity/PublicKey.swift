import CSecp256k1
import MeshWire

/// A secp256k1 public key, held in uncompressed SEC1 form.
public struct PublicKey: Hashable, Sendable, CustomStringConvertible {
    /// 65 bytes: 0x04 || X || Y.
    public let uncompressed: [UInt8]

    /// Parses a 33-byte compressed or 65-byte uncompressed SEC1 key; nil unless it is a point on the curve.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 33 || bytes.count == 65 else { return nil }
        var point = secp256k1_pubkey()
        guard secp256k1_ec_pubkey_parse(Crypto.secp256k1, &point, bytes, bytes.count) == 1 else { return nil }
        self.init(point: point)
    }

    /// Serialises a point libsecp256k1 has already validated.
    init(point: secp256k1_pubkey) {
        var point = point
        var out = [UInt8](repeating: 0, count: 65)
        var length = out.count
        secp256k1_ec_pubkey_serialize(Crypto.secp256k1, &out, &length, &point, UInt32(SECP256K1_EC_UNCOMPRESSED))
        uncompressed = out
    }

    /// 33 bytes: 0x02 or 0x03 (the parity of Y) || X.
    public var compressed: [UInt8] {
        [0x02 | (uncompressed[64] & 1)] + uncompressed[1...32]
    }

    /// The last 20 bytes of Keccak-256(X || Y).
    public var address: WalletAddress {
        WalletAddress(bytes: Array(Keccak.hash256(uncompressed[1...]).suffix(WalletAddress.byteCount)))!
    }

    /// `0x` and the compressed key in hex.
    public var description: String { "0x" + Hex.encode(compressed) }
}
