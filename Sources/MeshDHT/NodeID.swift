import MeshIdentity
import MeshWire

/// A 256-bit Kademlia identifier: a node's id (Keccak-256 of its public key) or a record key (Keccak-256 of a
/// wallet address). Held as four big-endian 64-bit words so XOR distances and comparisons stay cheap in a
/// 10,000-node simulation; `bytes` gives the 32-byte form.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public static let byteCount = 32

    let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    init(_ w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) {
        (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3)
    }

    /// Nil unless `bytes` is exactly 32 bytes long.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        var r = ByteReader(bytes)
        self.init(r.readUInt64()!, r.readUInt64()!, r.readUInt64()!, r.readUInt64()!)
    }

    /// Keccak-256 of the 64-byte X‖Y public key, so the node's wallet-style address is the last 20 bytes.
    public init(publicKey: PublicKey) {
        self.init(bytes: Keccak.hash256(publicKey.uncompressed[1...]))!
    }

    /// The DHT key of a wallet's presence record: Keccak-256 of the 20 address bytes.
    public static func key(for wallet: WalletAddress) -> NodeID {
        NodeID(bytes: Keccak.hash256(wallet.bytes))!
    }

    /// A uniformly random id from `rng` (simulations, bucket refresh targets).
    public static func random(using rng: inout some RandomNumberGenerator) -> NodeID {
        NodeID(rng.next(), rng.next(), rng.next(), rng.next())
    }

    public var bytes: [UInt8] {
        var w = ByteWriter(capacity: Self.byteCount)
        w.write(w0)
        w.write(w1)
        w.write(w2)
        w.write(w3)
        return w.bytes
    }

    /// The wallet-style address of a node id (its last 20 bytes), as node-ctl shows nodes.
    public var address: WalletAddress { WalletAddress(bytes: Array(bytes.suffix(WalletAddress.byteCount)))! }

    /// XOR distance.
    public func distance(to other: NodeID) -> NodeID {
        NodeID(w0 ^ other.w0, w1 ^ other.w1, w2 ^ other.w2, w3 ^ other.w3)
    }

    public var leadingZeroBits: Int {
        if w0 != 0 { return w0.leadingZeroBitCount }
        if w1 != 0 { return 64 + w1.leadingZeroBitCount }
        if w2 != 0 { return 128 + w2.leadingZeroBitCount }
        return 192 + w3.leadingZeroBitCount
    }

    /// The k-bucket `other` falls in, seen from `self`: 255 − (leading zero bits of the distance), so bucket i
    /// holds ids at distance [2^i, 2^(i+1)). Nil for `self`.
    public func bucketIndex(of other: NodeID) -> Int? {
        let zeros = distance(to: other).leadingZeroBits
        return zeros == 256 ? nil : 255 - zeros
    }

    /// The ids in bucket `index` of `self`: those sharing its first 255 − index bits and differing in the next.
    public func bucketRange(_ index: Int) -> ClosedRange<NodeID> {
        precondition((0..<256).contains(index))
        let (mask, flipped) = prefixMask(bits: 256 - index)
        return flipped.and(mask)...flipped.or(mask.inverted)
    }

    /// A random id in bucket `index` of `self`.
    public func randomID(inBucket index: Int, using rng: inout some RandomNumberGenerator) -> NodeID {
        let range = bucketRange(index)
        return range.lowerBound.or(NodeID.random(using: &rng).and(prefixMask(bits: 256 - index).mask.inverted))
    }

    /// A mask of the first `bits` bits, and `self` with bit `bits − 1` flipped.
    private func prefixMask(bits: Int) -> (mask: NodeID, flipped: NodeID) {
        func word(_ i: Int) -> UInt64 {
            let keep = min(max(bits - i * 64, 0), 64)
            return keep == 0 ? 0 : (keep == 64 ? ~0 : ~0 << UInt64(64 - keep))
        }
        let mask = NodeID(word(0), word(1), word(2), word(3))
        let bit = bits - 1
        func flip(_ i: Int) -> UInt64 { (bit / 64 == i) ? UInt64(1) << UInt64(63 - bit % 64) : 0 }
        return (mask, NodeID(w0 ^ flip(0), w1 ^ flip(1), w2 ^ flip(2), w3 ^ flip(3)))
    }

    private func and(_ o: NodeID) -> NodeID { NodeID(w0 & o.w0, w1 & o.w1, w2 & o.w2, w3 & o.w3) }
    private func or(_ o: NodeID) -> NodeID { NodeID(w0 | o.w0, w1 | o.w1, w2 | o.w2, w3 | o.w3) }
    private var inverted: NodeID { NodeID(~w0, ~w1, ~w2, ~w3) }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool {
        if lhs.w0 != rhs.w0 { return lhs.w0 < rhs.w0 }
        if lhs.w1 != rhs.w1 { return lhs.w1 < rhs.w1 }
        if lhs.w2 != rhs.w2 { return lhs.w2 < rhs.w2 }
        return lhs.w3 < rhs.w3
    }

    /// 64 lower-case hex digits.
    public var hex: String { Hex.encode(bytes) }

    /// The first 8 bytes in hex and an ellipsis, for logs.
    public var description: String { String(hex.prefix(16)) + "…" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let bytes = Hex.decode(text), let id = NodeID(bytes: bytes) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a 32-byte hex id"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }
}
