/// Reads big-endian fields from untrusted bytes. Every read returns nil when the input is too short,
/// and leaves the reader where it was, so a parser can bail out with `guard let … else { return nil }`.
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset >= bytes.count }

    public mutating func readUInt8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func readUInt16() -> UInt16? { readInteger(UInt16.self) }
    public mutating func readUInt32() -> UInt32? { readInteger(UInt32.self) }
    public mutating func readUInt64() -> UInt64? { readInteger(UInt64.self) }

    public mutating func readInteger<T: FixedWidthInteger & UnsignedInteger>(_: T.Type) -> T? {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { return nil }
        var value: T = 0
        for i in 0..<size { value = (value << 8) | T(bytes[offset + i]) }
        offset += size
        return value
    }

    public mutating func readBytes(_ count: Int) -> [UInt8]? {
        guard count >= 0, remaining >= count else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    /// A byte string prefixed by a 16-bit length, refused when longer than `max`.
    public mutating func readLengthPrefixed(max: Int = Int(UInt16.max)) -> [UInt8]? {
        let start = offset
        guard let length = readUInt16(), Int(length) <= max, let body = readBytes(Int(length)) else {
            offset = start
            return nil
        }
        return body
    }

    public mutating func readRest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }
}

/// Appends big-endian fields.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// A writer on the storage of `storage` (its bytes dropped): written bytes handed back for reuse.
    public init(reusing storage: consuming [UInt8]) {
        bytes = consume storage
        bytes.removeAll(keepingCapacity: true)
    }

    /// Drops what was written and makes room for `capacity` bytes, keeping the storage (no allocation when it is
    /// this writer's alone and large enough).
    public mutating func reset(capacity: Int = 0) {
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ value: UInt8) { bytes.append(value) }

    public mutating func write<T: FixedWidthInteger & UnsignedInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func write(bytes other: some Sequence<UInt8>) { bytes.append(contentsOf: other) }

    public mutating func writeLengthPrefixed(_ other: [UInt8]) {
        precondition(other.count <= Int(UInt16.max), "length-prefixed field too long")
        write(UInt16(other.count))
        bytes.append(contentsOf: other)
    }
}
