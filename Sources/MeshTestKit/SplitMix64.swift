import MeshIdentity
import MeshWire

/// The seeded generator of the cores (MeshWire), under the name the tests use.
public typealias SplitMix64 = MeshWire.SplitMix64

extension MeshWire.SplitMix64 {
    /// A secp256k1 key from the generator (32 random bytes, drawn again in the rare case they are not a key).
    public mutating func privateKey() -> PrivateKey {
        while true {
            if let key = try? PrivateKey(bytes: bytes(32)) { return key }
        }
    }
}
