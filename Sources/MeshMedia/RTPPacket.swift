import MeshWire

/// An RTP packet (RFC 3550 §5.1). `serialize` emits version 2 with no padding, CSRC list or header
/// extension; the parser accepts and skips all three, and refuses anything malformed.
public struct RTPPacket: Sendable, Equatable {
    /// RFC 3550 §5.1: the fixed header is 12 bytes.
    public static let headerSize = 12
    private static let version: UInt8 = 2

    /// 7 bits.
    public var payloadType: UInt8
    public var marker: Bool
    public var sequence: UInt16
    public var timestamp: UInt32
    public var ssrc: UInt32
    public var payload: [UInt8]

    public init(payloadType: UInt8, marker: Bool = false, sequence: UInt16, timestamp: UInt32, ssrc: UInt32,
                payload: [UInt8]) {
        precondition(payloadType < 128, "RTP payload type is 7 bits")
        self.payloadType = payloadType
        self.marker = marker
        self.sequence = sequence
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
    }

    public func serialize() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.headerSize + payload.count)
        writer.write(Self.version << 6)
        writer.write((marker ? 0x80 : 0) | payloadType)
        writer.write(sequence)
        writer.write(timestamp)
        writer.write(ssrc)
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
        if first & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile field, then the extension length in 32-bit words.
            guard reader.readUInt16() != nil, let words = reader.readUInt16(),
                  reader.readBytes(Int(words) * 4) != nil
            else { return nil }
        }
        var end = bytes.count
        if first & 0x20 != 0 {
            // RFC 3550 §5.1: the last byte counts the padding bytes, itself included.
            let padding = Int(bytes[end - 1])
            guard padding >= 1, padding <= reader.remaining else { return nil }
            end -= padding
        }
        self.init(payloadType: second & 0x7f, marker: second & 0x80 != 0, sequence: sequence,
                  timestamp: timestamp, ssrc: ssrc, payload: Array(bytes[reader.offset..<end]))
    }
}
