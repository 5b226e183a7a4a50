#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MeshWire

/// A UDP endpoint: an IPv4 (4 bytes) or IPv6 (16 bytes) address and a port. IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`) are stored as IPv4, so one host has one form. Text: `1.2.3.4:5`, `[::1]:5`.
/// The address is held inline (two words), so contacts copy without reference counting.
public struct DHTEndpoint: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The 16 address bytes, big-endian; an IPv4 address sits in the low 32 bits of `low`.
    private let high: UInt64, low: UInt64
    public let isIPv4: Bool
    public var port: UInt16

    public init?(ip: [UInt8], port: UInt16) {
        let bytes: ArraySlice<UInt8>
        switch ip.count {
        case 4: bytes = ip[...]
        case 16 where ip[0..<10].allSatisfy({ $0 == 0 }) && ip[10] == 0xff && ip[11] == 0xff: bytes = ip[12...]
        case 16: bytes = ip[...]
        default: return nil
        }
        let word = { (slice: ArraySlice<UInt8>) in slice.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
        isIPv4 = bytes.count == 4
        high = isIPv4 ? 0 : word(bytes.prefix(8))
        low = isIPv4 ? word(bytes) : word(bytes.suffix(8))
        self.port = port
    }

    /// 4 bytes for IPv4, 16 for IPv6.
    public var ip: [UInt8] {
        let bytes = (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
        return isIPv4 ? Array(bytes.suffix(4)) : bytes
    }

    /// The IPv4 address as an integer, nil for IPv6.
    public var ipv4: UInt32? { isIPv4 ? UInt32(truncatingIfNeeded: low) : nil }

    /// Parses `1.2.3.4:5` or `[2001:db8::1]:5`.
    public init?(parsing text: String) {
        let host: String, portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
        }
        guard let port = UInt16(portText) else { return nil }
        var buffer = [UInt8](repeating: 0, count: 16)
        if !text.hasPrefix("["), inet_pton(AF_INET, host, &buffer) == 1 {
            self.init(ip: Array(buffer.prefix(4)), port: port)
        } else if text.hasPrefix("["), inet_pton(AF_INET6, host, &buffer) == 1 {
            self.init(ip: buffer, port: port)
        } else {
            return nil
        }
    }

    public var description: String {
        var text = [CChar](repeating: 0, count: 64)
        let family = isIPv4 ? AF_INET : AF_INET6
        _ = inet_ntop(family, ip, &text, socklen_t(text.count))
        let host = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return isIPv4 ? "\(host):\(port)" : "[\(host)]:\(port)"
    }

    /// The address prefix that per-prefix limits count, packed in an integer: the /24 of an IPv4 address, the
    /// /48 of an IPv6 one. Nil for loopback, private (RFC 1918, fc00::/7) and link-local addresses, which the
    /// limits exempt: a remote attacker cannot place contacts there, and a LAN or loopback mesh has many.
    var limitedPrefix: UInt64? {
        if isIPv4 {
            let (a, b) = (low >> 24 & 0xff, low >> 16 & 0xff)
            let local = a == 127 || a == 10 || (a == 172 && (16...31).contains(b)) || (a == 192 && b == 168)
                || (a == 169 && b == 254)
            return local ? nil : 4 << 56 | (low >> 8 & 0xff_ffff)
        }
        let loopback = high == 0 && low == 1
        let local = loopback || high >> 57 == 0xfc >> 1 || high >> 54 == 0xfe80 >> 6
        return local ? nil : 6 << 56 | high >> 16
    }

    /// The address without the port, and its /24 (IPv4) or /64 (IPv6) prefix: what per-source rate limits and
    /// storage quotas count. Unlike `limitedPrefix`, no address is exempt (docs/dht.md, "Hostile peers").
    var hostKey: SourceKey { SourceKey(high: high, low: low, isIPv4: isIPv4) }
    var prefixKey: SourceKey { isIPv4 ? SourceKey(high: 0, low: low & ~0xff, isIPv4: true) : SourceKey(high: high, low: 0, isIPv4: false) }

    /// Bytes on the wire: family, address, port.
    var wireBytes: Int { isIPv4 ? 7 : 19 }

    // MARK: wire: family (4 or 6), address, port

    func write(to w: inout ByteWriter) {
        w.write(isIPv4 ? UInt8(4) : UInt8(6))
        w.write(bytes: ip)
        w.write(port)
    }

    static func read(from r: inout ByteReader) -> DHTEndpoint? {
        let start = r
        guard let family = r.readUInt8(), family == 4 || family == 6,
              let ip = r.readBytes(family == 4 ? 4 : 16), let port = r.readUInt16(),
              let endpoint = DHTEndpoint(ip: ip, port: port), endpoint.isIPv4 == (family == 4)
        else {
            r = start
            return nil
        }
        return endpoint
    }

    // MARK: Codable as the text form

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let endpoint = DHTEndpoint(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not HOST:PORT"))
        }
        self = endpoint
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// A node as the DHT knows it: its id and where it listens.
public struct Contact: Hashable, Sendable, Codable {
    public var id: NodeID
    public var endpoint: DHTEndpoint

    public init(id: NodeID, endpoint: DHTEndpoint) {
        self.id = id
        self.endpoint = endpoint
    }

    func write(to w: inout ByteWriter) {
        w.write(bytes: id.bytes)
        endpoint.write(to: &w)
    }

    static func read(from r: inout ByteReader) -> Contact? {
        let start = r
        guard let idBytes = r.readBytes(NodeID.byteCount), let id = NodeID(bytes: idBytes),
              let endpoint = DHTEndpoint.read(from: &r)
        else {
            r = start
            return nil
        }
        return Contact(id: id, endpoint: endpoint)
    }
}

/// A source address or address prefix (`DHTEndpoint.hostKey`, `prefixKey`).
struct SourceKey: Hashable, Sendable {
    let high: UInt64, low: UInt64
    let isIPv4: Bool
}
