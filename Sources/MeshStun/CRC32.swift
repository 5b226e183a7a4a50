/// CRC-32 as ISO 3309 / ITU-T V.42 define it (the zlib one: reflected polynomial 0xEDB88320, initial value and
/// final XOR 0xFFFFFFFF), which STUN's FINGERPRINT uses (RFC 8489 §14.7). A table-driven byte-at-a-time loop:
/// STUN messages are a few dozen bytes.
struct CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    private var state: UInt32 = 0xFFFF_FFFF

    mutating func update(_ bytes: some Sequence<UInt8>) {
        for byte in bytes { state = Self.table[Int((state ^ UInt32(byte)) & 0xFF)] ^ (state >> 8) }
    }

    var value: UInt32 { state ^ 0xFFFF_FFFF }

    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = CRC32()
        crc.update(bytes)
        return crc.value
    }
}
