import MeshWire

/// Trunks: the data messages of many sessions bound for one neighbour in one link payload, media packets of a
/// running session with a compressed RTP header (a mini entry) instead of the full one (docs/forwarding.md,
/// "Trunks and mini-frames"). The next hop restores every data message byte for byte, so end-to-end SRTP
/// authentication still passes: relays hold no keys and need none for this.
public enum TrunkWire {
    /// Link application tag of a trunk payload, next to the forwarding layer's 0x30–0x38.
    public static let tag: UInt8 = 0x39
    /// Payload size a trunk is closed at: with the link's 30 bytes (header, payload type, tag) and UDP/IPv6's 48 it
    /// fits the 1,280-byte minimum IPv6 MTU.
    public static let defaultMaxBytes = 1_200
    /// Longest entry body the 14-bit length can say.
    public static let maxEntryBytes = 0x3FFF

    /// Whether a link payload is a trunk.
    public static func isTrunk(_ payload: [UInt8]) -> Bool { payload.first == tag }

    /// Whether `append` takes `message`: a data message (tag, label) no longer than an entry can be. Anything else
    /// is sent as its own link payload.
    public static func canCarry(_ message: some Collection<UInt8>) -> Bool {
        message.count >= 5 && message.count <= maxEntryBytes && ChainMessage.isData(message)
    }

    /// Entry kinds, the top 2 bits of an entry's u16 header (0b10 and 0b11 are not used: malformed).
    static let fullKind: UInt16 = 0b00
    static let miniKind: UInt16 = 0b01

    /// A mini body before the SRTP bytes after the fixed header: label, check, sequence low byte, timestamp low 24 bits.
    static let miniHeaderBytes = 9
    /// A media data message's bytes before what relays never read: tag, label, 0x20, the 12-byte RTP fixed header.
    static let mediaHeaderBytes = 18
    /// End-to-end tag of one SRTP packet inside a data message.
    static let mediaTag: UInt8 = 0x20

    /// How far a mini may be ahead of its reference: at most 63 packets (a refresh every 64, 1.28 s at 20 ms) and
    /// less than 2^22 timestamp units (87 s at 48 kHz).
    static let miniSpan = Span(seq: 63, ts: 1 << 22)
    /// How far a new reference may be ahead of the previous one and keep the context (no extra fulls).
    static let referenceStep = Span(seq: 64, ts: 1 << 22)
    /// How far ahead of the decoder's reference a mini may restore: a decoder that missed up to two references in a
    /// row restores from an older one (2 × 64 + 63 sequence numbers, under 3 × 2^22 timestamp units: within the 8
    /// and 24 bits a mini carries). Offsets 192–255 are what a mini behind the reference gives (a late trunk):
    /// dropped for certain rather than left to the check byte.
    static let bridgedSeq = 2 * referenceStep.seq + miniSpan.seq
    /// Fulls a new context sends after its first, so that one lost trunk does not leave the next hop without one.
    static let extraFulls: UInt8 = 2

    /// The bits of an RTP fixed header a mini entry does not carry (byte0, byte1, SSRC, the sequence's high byte,
    /// the timestamp's high byte), folded to one byte. The decoder computes it over the header it restored: a
    /// reference other than the encoder's (newer ones were missed) that restores other bytes is caught here. Sums,
    /// not a mixing hash, so that the usual errors are certain to show: an older reference with the same byte0,
    /// byte1 and SSRC makes the high bytes come out short by a and b, and a + 3b reaches 256 only after some
    /// 60,000 packets or hours of timestamps; byte0 or byte1 alone changed (the marker bit, the payload type)
    /// always shows, × 0x9D being one to one (and spreading small differences, a neighbouring payload type, away
    /// from the small sums of stale high bytes). A changed SSRC, or a changed byte0/byte1 together with stale high
    /// bytes, is left to 1 in 256: the end's SRTP authentication drops what slips through, as a lost packet.
    static func check(_ h: RTPHeader) -> UInt8 {
        let ssrc = UInt8(truncatingIfNeeded: h.ssrc ^ h.ssrc >> 8 ^ h.ssrc >> 16 ^ h.ssrc >> 24)
        let seqHigh = UInt8(truncatingIfNeeded: h.seq >> 8)
        let tsHigh = UInt8(truncatingIfNeeded: h.ts >> 24)
        return (h.byte0 ^ h.byte1 ^ ssrc) &* 0x9D &+ seqHigh &+ tsHigh &* 3
    }
}

/// The 12-byte RTP fixed header of a media data message, the part of it a mini entry compresses.
struct RTPHeader: Equatable, Sendable {
    var byte0: UInt8
    var byte1: UInt8
    var seq: UInt16
    var ts: UInt32
    var ssrc: UInt32

    /// The header of a media data message (inner bytes 0x20 and an RTP version 2 header), nil for any other.
    init?<Bytes: RandomAccessCollection<UInt8>>(message: Bytes) where Bytes.Index == Int {
        let b = message.startIndex
        func m(_ i: Int) -> UInt8 { message[b + i] }
        guard message.count >= TrunkWire.mediaHeaderBytes, m(5) == TrunkWire.mediaTag, m(6) >> 6 == 2 else { return nil }
        byte0 = m(6)
        byte1 = m(7)
        seq = UInt16(m(8)) << 8 | UInt16(m(9))
        ts = UInt32(m(10)) << 24 | UInt32(m(11)) << 16 | UInt32(m(12)) << 8 | UInt32(m(13))
        ssrc = UInt32(m(14)) << 24 | UInt32(m(15)) << 16 | UInt32(m(16)) << 8 | UInt32(m(17))
    }

    /// Whether two headers share what a mini entry never carries: byte0, byte1 (marker bit included), SSRC.
    func sameStatic(as o: RTPHeader) -> Bool { byte0 == o.byte0 && byte1 == o.byte1 && ssrc == o.ssrc }

    /// Whether this header is ahead of `reference` by 1 to `span.seq` packets and less than `span.ts` timestamp
    /// units, counted modulo the field sizes (a wrap in between is fine: the decoder adds modulo too).
    func isAhead(of reference: RTPHeader, within span: Span) -> Bool {
        let ahead = seq &- reference.seq
        return ahead >= 1 && ahead <= span.seq && ts &- reference.ts < span.ts
    }
}

/// A distance in sequence numbers (at most) and timestamp units (less than).
struct Span {
    var seq: UInt16
    var ts: UInt32
}

/// Counters of a trunk encoder or decoder.
public struct TrunkCounters: Sendable, Codable, Equatable {
    /// Trunks finished (encoder) or received with the trunk tag (decoder).
    public var trunks = 0
    /// Full entries written, or received and passed on.
    public var fullEntries = 0
    /// Mini entries written, or received and restored.
    public var miniEntries = 0
    /// Decoder: entries with unknown kind bits, a length past the end, a short mini body, a full body that is not
    /// a data message, and trunks without a single entry. Encoder: messages `TrunkWire.canCarry` refuses.
    public var malformed = 0
    /// Mini entries for a label without a reference (its full entries were lost, or the table was cleared).
    public var miniWithoutContext = 0
    /// Mini entries the reference held cannot restore: the sequence offset is not one an encoder sends from it (a
    /// mini from a late trunk, behind the reference), or the check byte does not match the restored header (the
    /// decoder missed newer references than it can bridge).
    public var miniMismatch = 0

    public init() {}
}

/// Context tables keyed by label, bounded: a new label when the table is full clears it. The sessions then
/// start over with full entries, which is correct and keeps memory bounded without per-entry bookkeeping.
struct ContextTable<Value: Sendable>: Sendable {
    private var values: [UInt32: Value] = [:]
    let capacity: Int

    var count: Int { values.count }

    init(capacity: Int) { self.capacity = max(1, capacity) }

    subscript(label: UInt32) -> Value? {
        get { values[label] }
        set {
            if newValue != nil, values.count >= capacity, values[label] == nil { values.removeAll(keepingCapacity: true) }
            values[label] = newValue
        }
    }
}

/// One neighbour's outgoing trunks: data messages in, trunk payloads out (header contexts per label).
///
/// A media packet goes as a mini entry only when the next hop, holding the reference this encoder holds (the last
/// full media entry of the label) or one up to two references older, restores it exactly: same byte0, byte1 and
/// SSRC as the reference, the next sequence number after the label's last packet (else there was loss,
/// reordering or duplication upstream), at most 63 packets and under 2^22 timestamp units after the reference
/// without either field wrapping, and no extra fulls owed. Everything else goes full.
public struct TrunkEncoder: Sendable {
    struct Context: Sendable {
        /// The last media packet sent as a full entry.
        var reference: RTPHeader
        var lastSeq: UInt16
        var fullsOwed: UInt8
    }

    /// Size a trunk is closed at (a single entry bigger than this still goes, alone).
    public let maxBytes: Int
    private(set) var contexts: ContextTable<Context>
    private var open = ByteWriter(capacity: 0)
    /// Sent trunks' storage, given back for the next trunks (`recycle`): two, since a trunk that fills up opens
    /// the next before it is sent and given back.
    private var spares: [[UInt8]] = []
    /// Entries in the open trunk.
    public private(set) var pending = 0
    public private(set) var counters = TrunkCounters()

    public init(maxBytes: Int = TrunkWire.defaultMaxBytes, maxContexts: Int = 16_384) {
        self.maxBytes = maxBytes
        contexts = ContextTable(capacity: maxContexts)
    }

    /// Adds one data message to the open trunk. When it does not fit, returns the finished trunk and the message opens
    /// the next one. A message bigger than maxBytes alone still goes (a trunk of one entry). A message
    /// `TrunkWire.canCarry` refuses is counted as malformed and left out.
    public mutating func append(_ message: [UInt8]) -> [UInt8]? {
        guard TrunkWire.canCarry(message) else {
            counters.malformed += 1
            return nil
        }
        let label = ChainMessage.label(of: message)!
        let header = RTPHeader(message: message)
        let mini = header.map { sendsMini($0, label: label) } ?? false
        let entryBytes = 2 + (mini ? TrunkWire.miniHeaderBytes + message.count - TrunkWire.mediaHeaderBytes : message.count)
        var finished: [UInt8]?
        if pending > 0, open.bytes.count + entryBytes > maxBytes { finished = finish() }
        if pending == 0 {
            if let storage = spares.popLast() { open = ByteWriter(reusing: consume storage) }
            open.reset(capacity: Swift.max(maxBytes, 1 + entryBytes))
            open.write(TrunkWire.tag)
        }
        pending += 1
        if mini, let header {
            counters.miniEntries += 1
            open.write(TrunkWire.miniKind << 14 | UInt16(entryBytes - 2))
            open.write(bytes: message[1..<5])
            open.write(TrunkWire.check(header))
            open.write(message[9])
            open.write(bytes: message[11..<14])
            open.write(bytes: message[TrunkWire.mediaHeaderBytes...])
        } else {
            counters.fullEntries += 1
            open.write(TrunkWire.fullKind << 14 | UInt16(entryBytes - 2))
            open.write(bytes: message)
        }
        return finished
    }

    /// Gives a finished trunk's storage back for the next trunk (no allocation per trunk).
    public mutating func recycle(_ trunk: consuming [UInt8]) {
        if spares.count < 2 { spares.append(consume trunk) }
    }

    /// The open trunk (nil when empty); contexts are kept.
    public mutating func finish() -> [UInt8]? {
        guard pending > 0 else { return nil }
        counters.trunks += 1
        pending = 0
        defer { open = ByteWriter(capacity: 0) }
        return open.bytes
    }

    /// Forgets a label's context (its session ended).
    public mutating func forget(label: UInt32) { contexts[label] = nil }

    /// Decides mini or full for one media packet and keeps the label's context: a full becomes the reference, and
    /// one that starts a new context (the first, a changed byte0/byte1/SSRC, or a reference too far from the last
    /// to be bridged) owes the next packets as fulls too.
    private mutating func sendsMini(_ h: RTPHeader, label: UInt32) -> Bool {
        guard var c = contexts[label] else {
            contexts[label] = Context(reference: h, lastSeq: h.seq, fullsOwed: TrunkWire.extraFulls)
            return false
        }
        defer { contexts[label] = c }
        let sameStatic = h.sameStatic(as: c.reference)
        let mini = sameStatic && c.fullsOwed == 0 && h.seq == c.lastSeq &+ 1 && h.seq > c.reference.seq
            && h.ts >= c.reference.ts && h.isAhead(of: c.reference, within: TrunkWire.miniSpan)
        c.lastSeq = h.seq
        if !mini {
            let continues = sameStatic && h.isAhead(of: c.reference, within: TrunkWire.referenceStep)
            c.fullsOwed = continues ? c.fullsOwed - min(c.fullsOwed, 1) : TrunkWire.extraFulls
            c.reference = h
        }
        return mini
    }
}

/// The data messages of trunk payloads from one neighbour, restored byte for byte (header contexts per label).
public struct TrunkDecoder: Sendable {
    private(set) var references: ContextTable<RTPHeader>
    public private(set) var counters = TrunkCounters()

    public init(maxContexts: Int = 16_384) {
        references = ContextTable(capacity: maxContexts)
    }

    /// The data messages of one trunk payload, restored byte for byte, in order.
    public mutating func decode(_ payload: [UInt8]) -> [[UInt8]] {
        var out = TrunkMessages()
        decode(payload, into: &out)
        return out.map(Array.init)
    }

    /// The data messages of one trunk payload, restored byte for byte, in order, into `out` (emptied first, its
    /// storage reused: nothing is allocated per message). Malformed entries are dropped and counted; a length
    /// running past the end drops the rest of the trunk.
    public mutating func decode(_ payload: [UInt8], into out: inout TrunkMessages) {
        out.removeAll()
        guard TrunkWire.isTrunk(payload) else {
            counters.malformed += 1
            return
        }
        counters.trunks += 1
        guard payload.count > 1 else {
            counters.malformed += 1
            return
        }
        var at = 1
        while at < payload.count {
            guard at + 2 <= payload.count else {
                counters.malformed += 1
                break
            }
            let header = UInt16(payload[at]) << 8 | UInt16(payload[at + 1])
            let start = at + 2
            let end = start + Int(header & 0x3FFF)
            guard end <= payload.count else {
                counters.malformed += 1
                break
            }
            at = end
            switch header >> 14 {
            case TrunkWire.fullKind: full(payload[start..<end], into: &out)
            case TrunkWire.miniKind: mini(payload[start..<end], into: &out)
            default: counters.malformed += 1
            }
        }
    }

    /// Forgets a label's reference (its session ended).
    public mutating func forget(label: UInt32) { references[label] = nil }

    /// A full entry's data message as it is; a media one becomes its label's reference.
    private mutating func full(_ body: ArraySlice<UInt8>, into out: inout TrunkMessages) {
        guard TrunkWire.canCarry(body) else {
            counters.malformed += 1
            return
        }
        if let h = RTPHeader(message: body) { references[ChainMessage.label(of: body)!] = h }
        counters.fullEntries += 1
        out.append(body)
    }

    /// A mini entry's data message, its header restored by forward offsets from the label's reference.
    private mutating func mini(_ body: ArraySlice<UInt8>, into out: inout TrunkMessages) {
        guard body.count >= TrunkWire.miniHeaderBytes else {
            counters.malformed += 1
            return
        }
        let b = body.startIndex
        let label = UInt32(body[b]) << 24 | UInt32(body[b + 1]) << 16 | UInt32(body[b + 2]) << 8 | UInt32(body[b + 3])
        guard let ref = references[label] else {
            counters.miniWithoutContext += 1
            return
        }
        let seqAhead = UInt16(body[b + 5] &- UInt8(truncatingIfNeeded: ref.seq))
        let tsLow = UInt32(body[b + 6]) << 16 | UInt32(body[b + 7]) << 8 | UInt32(body[b + 8])
        var h = ref
        h.seq = ref.seq &+ seqAhead
        h.ts = ref.ts &+ ((tsLow &- ref.ts) & 0xFF_FFFF)
        guard seqAhead >= 1, seqAhead <= TrunkWire.bridgedSeq, TrunkWire.check(h) == body[b + 4] else {
            counters.miniMismatch += 1
            return
        }
        out.append(restoring: h, label: body[b..<(b + 4)], rest: body[(b + TrunkWire.miniHeaderBytes)...])
        counters.miniEntries += 1
    }
}

/// The data messages of one trunk, restored back to back into one buffer that is reused from trunk to trunk.
public struct TrunkMessages: RandomAccessCollection, Sendable {
    private var writer = ByteWriter(capacity: 0)
    private var ends: [Int] = []

    public init() {}

    public var startIndex: Int { 0 }
    public var endIndex: Int { ends.count }

    public subscript(position: Int) -> ArraySlice<UInt8> { writer.bytes[(position == 0 ? 0 : ends[position - 1])..<ends[position]] }

    mutating func removeAll() {
        writer.reset()
        ends.removeAll(keepingCapacity: true)
    }

    /// A message as it is.
    mutating func append(_ message: ArraySlice<UInt8>) {
        writer.write(bytes: message)
        ends.append(writer.bytes.count)
    }

    /// A media data message from a mini entry: tag, label, 0x20, the restored RTP header, the rest.
    mutating func append(restoring h: RTPHeader, label: ArraySlice<UInt8>, rest: ArraySlice<UInt8>) {
        writer.write(ChainMessage.Tag.data.rawValue)
        writer.write(bytes: label)
        writer.write(TrunkWire.mediaTag)
        writer.write(h.byte0)
        writer.write(h.byte1)
        writer.write(h.seq)
        writer.write(h.ts)
        writer.write(h.ssrc)
        writer.write(bytes: rest)
        ends.append(writer.bytes.count)
    }
}
