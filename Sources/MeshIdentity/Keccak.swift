import CBotan

/// Keccak-256 as Ethereum uses it (the original Keccak padding, not FIPS 202 SHA3-256), from Botan.
public enum Keccak {
    /// The 32-byte Keccak-256 digest of `data`.
    public static func hash256(_ data: some Collection<UInt8>) -> [UInt8] {
        if let digest = data.withContiguousStorageIfAvailable({ hash256(buffer: $0) }) {
            return digest
        }
        return Array(data).withUnsafeBufferPointer { hash256(buffer: $0) }
    }

    private static func hash256(buffer: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var handle: botan_hash_t?
        guard botan_hash_init(&handle, "Keccak-1600(256)", 0) == 0, let handle else {
            fatalError("Botan has no Keccak-1600(256); libbotan-2 is required")
        }
        defer { botan_hash_destroy(handle) }
        var digest = [UInt8](repeating: 0, count: 32)
        guard botan_hash_update(handle, buffer.baseAddress, buffer.count) == 0,
              botan_hash_final(handle, &digest) == 0
        else { fatalError("Botan Keccak-1600(256) failed") }
        return digest
    }
}
