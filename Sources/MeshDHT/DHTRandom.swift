import MeshIdentity
import MeshWire

/// xoshiro256** seeded from Keccak-256 of the seed: the core's own deterministic source of transaction ids and
/// refresh targets, so a node never reads global randomness and a simulation repeats exactly.
struct DHTRandom: RandomNumberGenerator, Sendable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    init(seed: UInt64) {
        var w = ByteWriter(capacity: 8)
        w.write(seed)
        var r = ByteReader(Keccak.hash256(w.bytes))
        (s0, s1, s2, s3) = (r.readUInt64()!, r.readUInt64()!, r.readUInt64()!, r.readUInt64()!)
    }

    mutating func next() -> UInt64 {
        let result = (s1 &* 5).rotatedLeft(7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3.rotatedLeft(45)
        return result
    }
}

extension UInt64 {
    fileprivate func rotatedLeft(_ n: UInt64) -> UInt64 { (self << n) | (self >> (64 - n)) }
}
