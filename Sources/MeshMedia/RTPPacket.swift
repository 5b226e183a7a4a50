import MeshWire

/// An RTP packet (RFC 3550 §5.1). `serialize` emits version 2 with no padding or CSRC list, and the
/// header extension in RFC 8285's one-byte form when `extensions` is not empty; the parser accepts padding and
/// CSRC lists (skipped) and both extension forms (one-byte elements are kept, others skipped), and refuses
/// anything malformed.
public struct RTPPacket: Sendable, Equatable {
    /// RFC 3550 §5.1: the fixed header is 12 bytes.
    public static let headerSize = 12
    private static let version: UInt8 = 2
    /// RFC 8285 §4.2: the profile field of a one-byte-header extension block.
    private static let oneByteProfile: UInt16 = 0xBEDE

    /// 7 bits.
    public var payloadType: UInt8
    public var marker: Bool
    public var sequence: UInt16
    public var timestamp: UInt32
    public var ssrc: UInt32
    public var payload: [UInt8]
    /// RFC 8285 one-byte header extension elements by ID (1...14), each 1...16 bytes.
    public var extensions: [UInt8: [UInt8]]

    public init(payloadType: UInt8, marker: Bool = false, sequence: UInt16, timestamp: UInt32, ssrc: UInt32,
                payload: [UInt8], extensions: [UInt8: [UInt8]] = [:]) {
        precondition(payloadType < 128, "RTP payload type is 7 bits")
        precondition(extensions.allSatisfy { (1...14).contains($0.key) && (1...16).contains($0.value.count) },
                     "RFC 8285 one-byte elements: ID 1...14, 1...16 bytes")
        self.payloadType = payloadType
        self.marker = marker
        self.sequence = sequence
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.extensions = extensions
    }

    public func serialize() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.headerSize + 4 + extensions.values.reduce(0) { $0 + $1.count + 1 }
                                    + 3 + payload.count)
        writer.write(Self.version << 6 | (extensions.isEmpty ? 0 : 0x10))
        writer.write((marker ? 0x80 : 0) | payloadType)
        writer.write(sequence)
        writer.write(timestamp)
        writer.write(ssrc)
        if !extensions.isEmpty {
            var block: [UInt8] = []
            for (id, data) in extensions.sorted(by: { $0.key < $1.key }) {
                block.append(id << 4 | UInt8(data.count - 1))
                block += data
            }
            block += [UInt8](repeating: 0, count: (4 - block.count % 4) % 4)
            writer.write(Self.oneByteProfile)
            writer.write(UInt16(block.count / 4))
            writer.write(bytes: block)
        }
        writer.write(bytes: payload)
        return writer.bytes
    }

    public init?(parsing bytes: [UInt8]) {
        var reader = ByteReader(bytes)
        guard let first = reader.readUInt8(), first >> 6 == Self.version,
              let second = reader.readUInt8(),
              let sequence = reader.readUInt16(),
              let timestamp = reader.readUInt32(),
              let ssrc = reader.readUInt32(),
              reader.readBytes(Int(first & 0x0f) * 4) != nil
        else { return nil }
        var extensions: [UInt8: [UInt8]] = [:]
        if first & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile field, then the extension length in 32-bit words.
            guard let profile = reader.readUInt16(), let words = reader.readUInt16(),
                  let block = reader.readBytes(Int(words) * 4)
            else { return nil }
            if profile == Self.oneByteProfile {
                guard let elements = Self.oneByteElements(block) else { return nil }
                extensions = elements
            }
        }
        var end = bytes.count
        if first & 0x20 != 0 {
            // RFC 3550 §5.1: the last byte counts the padding bytes, itself included.
            let padding = Int(bytes[end - 1])
            guard padding >= 1, padding <= reader.remaining else { return nil }
            end -= padding
        }
        self.init(payloadType: second & 0x7f, marker: second & 0x80 != 0, sequence: sequence,
                  timestamp: timestamp, ssrc: ssrc, payload: Array(bytes[reader.offset..<end]),
                  extensions: extensions)
    }

    /// RFC 8285 §4.2: elements of one header byte (ID, length − 1) and their data; zero bytes are padding and
    /// ID 15 ends the block. Nil when an element runs past the block or has ID 0 with a length (reserved).
    private static func oneByteElements(_ block: [UInt8]) -> [UInt8: [UInt8]]? {
        var elements: [UInt8: [UInt8]] = [:]
        var index = 0
        while index < block.count {
            let header = block[index]
            index += 1
            if header == 0 { continue }
            let id = header >> 4
            if id == 15 { break }
            guard id != 0 else { return nil }
            let length = Int(header & 0x0f) + 1
            guard index + length <= block.count else { return nil }
            elements[id] = Array(block[index..<index + length])
            index += length
        }
        return elements
    }
}
