import MeshWire

/// A 20-byte Ethereum-style account address, shown with the EIP-55 mixed-case checksum.
public struct WalletAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    public static let byteCount = 20

    public let bytes: [UInt8]

    /// The 20 bytes hashed as one block (the synthesized hash fed them to the hasher one at a time: a fifth of a
    /// link packet's cost went there, as every packet looks its neighbour up by address).
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    /// Nil unless `bytes` is exactly 20 bytes long.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    /// Parses `0x` followed by 40 hex digits. All-lower-case and all-upper-case digits are accepted as they
    /// are; mixed case is an EIP-55 checksum and must be right (a mistyped address is refused, not used).
    public init(parsing text: String) throws(IdentityError) {
        let digits = text.utf8.dropFirst(2)
        guard text.hasPrefix("0x"), digits.count == 2 * Self.byteCount,
              let bytes = Hex.decode(String(decoding: digits, as: UTF8.self)), bytes.count == Self.byteCount
        else {
            throw IdentityError(.invalidInput, "address \(text.debugDescription) is not 0x followed by 40 hex digits")
        }
        self.bytes = bytes
        let hasLower = digits.contains { (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
        let hasUpper = digits.contains { (UInt8(ascii: "A")...UInt8(ascii: "F")).contains($0) }
        if hasLower, hasUpper, checksummed != text {
            throw IdentityError(.invalidInput, "address \(text) has a wrong EIP-55 checksum (expected \(checksummed))")
        }
    }

    /// EIP-55: a hex letter is upper case when the matching nibble of Keccak-256(lower-case hex) is 8 or more.
    public var checksummed: String {
        let lower = Array(Hex.encode(bytes).utf8)
        let hash = Keccak.hash256(lower)
        var out = Array("0x".utf8)
        for (i, char) in lower.enumerated() {
            let nibble = i % 2 == 0 ? hash[i / 2] >> 4 : hash[i / 2] & 0x0f
            let isLetter = char >= UInt8(ascii: "a")
            out.append(isLetter && nibble >= 8 ? char - 0x20 : char)
        }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { checksummed }

    /// Byte-wise order, which is also the order of the lower-case hex text.
    public static func < (lhs: WalletAddress, rhs: WalletAddress) -> Bool {
        lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }
}
