import MeshWire

/// What a receiver tells the peer's sender about the loss it sees, carried back in every packet of the other
/// direction as an RFC 8285 one-byte header extension element (ID `LossReport.extensionID`, 2 bytes: network
/// loss and loss in bursts of two or more, each in quarter percent, 0...255).
public struct LossReport: Sendable, Equatable, Codable {
    public static let extensionID: UInt8 = 1
    /// Sequence numbers missing on arrival (before any recovery), % of packets expected, recent average.
    public var lossPercent: Double
    /// The part of `lossPercent` in runs of two or more consecutive packets, which Opus FEC cannot rebuild.
    public var burstLossPercent: Double

    public init(lossPercent: Double, burstLossPercent: Double) {
        self.lossPercent = lossPercent
        self.burstLossPercent = burstLossPercent
    }

    public var bytes: [UInt8] { [Self.quarterPercent(lossPercent), Self.quarterPercent(burstLossPercent)] }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 2 else { return nil }
        self.init(lossPercent: Double(bytes[0]) / 4, burstLossPercent: Double(bytes[1]) / 4)
    }

    private static func quarterPercent(_ percent: Double) -> UInt8 {
        UInt8(min(255, max(0, (percent * 4).rounded())))
    }
}

/// Whether the sender adds a redundant copy of an earlier packet to each packet (RFC 2198-style, see
/// `RedundantPayload`).
public enum RedundancyMode: String, Sendable, Codable, CaseIterable {
    /// On while the peer's loss reports show burst loss (`RedundancyPolicy`), off otherwise.
    case auto
    case on
    case off
}

/// The sender's redundancy switch for `RedundancyMode.auto`, with hysteresis: on when the peer reports at least
/// 1 % of its packets lost in bursts (or 1 % loss of any kind without FEC, which rebuilds single losses), off
/// again below half of that.
public struct RedundancyPolicy: Sendable, Equatable {
    static let onPercent = 1.0
    static let offPercent = 0.5
    public private(set) var active = false

    public init(active: Bool = false) {
        self.active = active
    }

    /// Takes the latest report; true when redundancy is wanted from now on.
    public mutating func update(_ report: LossReport, fec: Bool) -> Bool {
        let loss = fec ? report.burstLossPercent : report.lossPercent
        if loss >= Self.onPercent {
            active = true
        } else if loss < Self.offPercent {
            active = false
        }
        return active
    }
}

/// The payload of a redundant packet (RTP payload type `payloadType`): earlier Opus packets, then this one.
///
/// ```
/// count      UInt8            redundant blocks that follow (0...3)
/// count × {  distance UInt8   sequence number of the block = this packet's − distance (1...255)
///            offset   UInt16  RTP timestamp of the block = this packet's − offset (1...65535 samples)
///            length   UInt16  bytes of the block's Opus packet (1...1275)
///         }
/// the blocks' Opus packets, in the order of their headers, then this packet's own Opus packet
/// ```
public struct RedundantPayload: Sendable, Equatable {
    /// The dynamic payload type for Opus with redundancy (111 is plain Opus).
    public static let payloadType: UInt8 = 112
    static let maxBlocks = 3

    public struct Block: Sendable, Equatable {
        public var distance: UInt8
        public var offset: UInt16
        public var opus: [UInt8]

        public init(distance: UInt8, offset: UInt16, opus: [UInt8]) {
            self.distance = distance
            self.offset = offset
            self.opus = opus
        }
    }

    public var blocks: [Block]
    public var primary: [UInt8]

    public init(blocks: [Block], primary: [UInt8]) {
        precondition(blocks.count <= Self.maxBlocks, "at most \(Self.maxBlocks) redundant blocks")
        self.blocks = blocks
        self.primary = primary
    }

    public func serialize() -> [UInt8] {
        var writer = ByteWriter(capacity: 1 + 5 * blocks.count + blocks.reduce(primary.count) { $0 + $1.opus.count })
        writer.write(UInt8(blocks.count))
        for block in blocks {
            writer.write(block.distance)
            writer.write(block.offset)
            writer.write(UInt16(block.opus.count))
        }
        for block in blocks { writer.write(bytes: block.opus) }
        writer.write(bytes: primary)
        return writer.bytes
    }

    /// Nil when the count, a distance, offset or length is out of range, or the blocks run past the end.
    public init?(parsing bytes: [UInt8]) {
        var reader = ByteReader(bytes)
        guard let count = reader.readUInt8(), count <= Self.maxBlocks else { return nil }
        var headers: [(distance: UInt8, offset: UInt16, length: Int)] = []
        for _ in 0..<count {
            guard let distance = reader.readUInt8(), distance > 0, let offset = reader.readUInt16(), offset > 0,
                  let length = reader.readUInt16(), (1...1275).contains(length)
            else { return nil }
            headers.append((distance, offset, Int(length)))
        }
        var blocks: [Block] = []
        for header in headers {
            guard let opus = reader.readBytes(header.length) else { return nil }
            blocks.append(Block(distance: header.distance, offset: header.offset, opus: opus))
        }
        guard let primary = reader.readBytes(reader.remaining), !primary.isEmpty else { return nil }
        self.init(blocks: blocks, primary: primary)
    }
}
