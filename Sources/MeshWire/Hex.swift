/// Lower-case hex encoding and strict decoding (an optional `0x` prefix is accepted).
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// An unsigned integer as lowercase hex, zero-padded to its type's width (16 digits for a UInt64).
    public static func padded<T: FixedWidthInteger & UnsignedInteger>(_ value: T) -> String {
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: T.bitWidth / 4 - hex.count) + hex
    }

    public static func decode(_ text: String) -> [UInt8]? {
        var chars = Array(text.utf8)
        if chars.count >= 2, chars[0] == UInt8(ascii: "0"), chars[1] == UInt8(ascii: "x") || chars[1] == UInt8(ascii: "X") {
            chars.removeFirst(2)
        }
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
