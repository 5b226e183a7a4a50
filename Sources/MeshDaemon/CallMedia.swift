import MeshCall
import MeshIdentity
import MeshMedia

/// Where a call's outgoing audio comes from.
enum MediaSource {
    /// Frames pushed by the control client that placed the call (`mesh-node call --play`).
    case client
    /// What this side plays out is sent back (auto-answer echo).
    case echo
    /// Nothing to say: silence keeps the stream alive (auto-answer record).
    case silence
}

/// Where a call's played-out audio goes (besides the stats).
enum MediaSink {
    case client
    case echo
    case recorder(WAVWriter, path: String)
}

/// Per-call figures for `node-ctl calls` and the call summary.
public struct CallMediaStats: Sendable, Codable, Equatable {
    public var codec: String
    /// The sender's current profile.
    public var profile: String
    public var bitrate: Int
    public var packetsSent: Int
    /// 20 ms frames the sender did not send because Opus was in DTX, % of frames.
    public var dtxSentPercent: Double
    public var packetsReceived: Int
    public var packetsLost: Int
    public var packetsLate: Int
    public var framesConcealed: Int
    public var fecRecovered: Int
    /// Lost packets played from a redundant copy.
    public var redundancyRecovered: Int
    /// Whether this side's packets carry redundant copies now (the peer reports burst loss), and how many did.
    public var redundancy: Bool
    public var packetsWithRedundancy: Int
    /// The loss the peer reported for this side's packets, %: all, and in bursts of two or more.
    public var peerLossPercent: Double?
    public var peerBurstLossPercent: Double?
    public var srtpRejected: Int
    /// Second copies of packets dropped before SRTP: the same RTP sequence number over both paths (the overlap of a
    /// move onto a direct path, docs/calls.md).
    public var duplicatesDropped: Int
    public var jitterMs: Double
    public var currentPlayoutDelayMs: Double
    public var meanPlayoutDelayMs: Double
    public var p95PlayoutDelayMs: Double
    public var targetPlayoutDelayMs: Double
    public var lateLossPercent: Double
    public var concealmentPercent: Double
    public var timeStretchPercent: Double
    /// Comfort noise played (the peer in DTX), % of audio played.
    public var dtxPercent: Double
    public var driftPpm: Double?
    public var recording: String?
    /// Frames of the client's (or echo's) feed dropped to keep its latency at its floor: quiet frames after a
    /// stall, the catch-up's, and overflow beyond a second (docs/media.md, "Client feed").
    public var feedFramesDropped: Int
}

/// One active call's media: Opus encoder and playout, SRTP per direction, a source and a sink.
/// Owned and driven by the node's event loop: `outbound()` and `playout(nowMs:)` every 20 ms.
final class CallMedia {
    let id: CallID
    let source: MediaSource
    let sink: MediaSink
    private let sender: MediaSender
    private let receiver: MediaReceiver
    private let srtpOut: SRTPContext
    private let srtpIn: SRTPContext
    /// The client's (or the echo loop's) frames waiting for the 20 ms grid; it sheds what a stall left queued.
    private var feed = ClientFeed()
    private var srtpRejected = 0
    private var recent = SequenceWindow()
    private var duplicatesDropped = 0
    /// What is played instead of the peer while nothing of it is to be heard (hold, quelch).
    private var comfortNoise: ComfortNoise
    /// Whether this side sends media (not while held or quelched) and whether it plays what comes in (not while
    /// held, nor where this node quelches the caller): docs/calls.md, "Call control". Muted sends silence.
    var sends = true
    var muted = false
    var plays = true {
        didSet {
            guard plays && !oldValue else { return }
            receiver.endStream()
            resumedAfter = receiver.packetsReceived
        }
    }
    /// After a hold or quelch: the packets received when it ended. Comfort noise goes on until the peer's stream is
    /// back (in DTX its next packet may be 400 ms away), rather than digital silence.
    private var resumedAfter: Int?

    init(id: CallID, keys: SRTPKeys, config: MediaConfig, source: MediaSource, sink: MediaSink) throws(MediaError) {
        self.id = id
        self.source = source
        self.sink = sink
        // RFC 3550: random initial sequence number and timestamp.
        sender = try MediaSender(config: config, ssrc: SecureRandom.uint32(),
                                 initialSequence: UInt16(truncatingIfNeeded: SecureRandom.uint32()),
                                 initialTimestamp: SecureRandom.uint32())
        receiver = try MediaReceiver(config: config)
        srtpOut = try SRTPContext(masterKeyAndSalt: keys.send, direction: .outbound)
        srtpIn = try SRTPContext(masterKeyAndSalt: keys.receive, direction: .inbound)
        comfortNoise = ComfortNoise(seed: id.raw)
    }

    /// A frame from the client (or the echo loop) to send later.
    func enqueue(_ frame: [Int16]) {
        guard frame.count == Audio.frameSamples else { return }
        feed.push(frame)
    }

    /// Takes the next 20 ms frame; the SRTP packet to send, or nil when there is none this tick (Opus DTX
    /// during silence sends one packet every 400 ms, which keeps the call's 10 s media timeout at bay; a 40 ms
    /// profile sends every other tick). The feed's frame is taken either way: held or muted, the client's audio
    /// is dropped, not queued.
    func outbound() throws(MediaError) -> [UInt8]? {
        let pulled = feed.pull()
        guard sends else {
            sender.skip()
            return nil
        }
        let frame = (muted ? nil : pulled) ?? [Int16](repeating: 0, count: Audio.frameSamples)
        return try sender.packetize(frame: frame, report: receiver.report).map { rtp throws(MediaError) in
            try srtpOut.protect(rtp)
        }
    }

    /// Switches the encoder to `profile` at the next packet boundary; the peer's receiver follows per packet.
    func apply(_ profile: QualityProfile) throws(MediaError) {
        try sender.apply(profile)
    }

    /// An SRTP packet from the peer. False when it does not authenticate (and it is counted). The loss report
    /// it carries steers this side's redundancy.
    func inbound(_ packet: [UInt8], nowMs: Int64) -> Bool {
        let sequence = packet.count >= 4 ? UInt16(packet[2]) << 8 | UInt16(packet[3]) : nil
        if let sequence, recent.contains(sequence) {
            duplicatesDropped += 1
            return false
        }
        guard let rtp = srtpIn.unprotect(packet) else {
            srtpRejected += 1
            return false
        }
        if let sequence { recent.insert(sequence) }
        let accepted = receiver.receive(rtp: rtp, nowMs: nowMs)
        if accepted, let report = receiver.peerReport { sender.apply(report: report) }
        return accepted
    }

    /// The frame to play now; the echo loop queues it to be sent back.
    func playout(nowMs: Int64) -> [Int16] {
        if let mark = resumedAfter, receiver.packetsReceived > mark { resumedAfter = nil }
        let frame = plays && resumedAfter == nil ? receiver.nextFrame(nowMs: nowMs) : comfortNoise.frame()
        if case .echo = sink { enqueue(frame) }
        return frame
    }

    var stats: CallMediaStats {
        let r = receiver.stats
        var recording: String?
        if case .recorder(_, let path) = sink { recording = path }
        return CallMediaStats(
            codec: "opus/48000/1", profile: sender.profile.name, bitrate: sender.profile.bitrate,
            packetsSent: sender.packetsSent,
            dtxSentPercent: 100 * Double(sender.framesSuppressed) / Double(max(1, sender.framesIn)),
            packetsReceived: r.packetsReceived, packetsLost: r.packetsLost, packetsLate: r.packetsLate,
            framesConcealed: r.framesConcealed, fecRecovered: r.fecRecovered,
            redundancyRecovered: r.redundancyRecovered, redundancy: sender.redundant,
            packetsWithRedundancy: sender.packetsWithRedundancy, peerLossPercent: receiver.peerReport?.lossPercent,
            peerBurstLossPercent: receiver.peerReport?.burstLossPercent, srtpRejected: srtpRejected,
            duplicatesDropped: duplicatesDropped,
            jitterMs: r.jitterMs, currentPlayoutDelayMs: r.currentPlayoutDelayMs,
            meanPlayoutDelayMs: r.meanPlayoutDelayMs, p95PlayoutDelayMs: r.p95PlayoutDelayMs,
            targetPlayoutDelayMs: r.targetDelayMs, lateLossPercent: r.lateLossPercent,
            concealmentPercent: r.concealmentPercent, timeStretchPercent: r.timeStretchPercent,
            dtxPercent: r.dtxPercent, driftPpm: r.driftPpm, recording: recording,
            feedFramesDropped: feed.droppedQuiet + feed.droppedCatchUp + feed.droppedOverflow)
    }
}

/// RTP sequence numbers taken lately (the last 64 below the highest), so that a packet that came over both the chain
/// and the direct path is dropped before SRTP: libsrtp's replay check would count the second copy as rejected. A
/// number is noted only once its packet authenticated, so a forged packet cannot make the real one look like a copy.
struct SequenceWindow {
    static let size: UInt16 = 64
    private var highest: UInt16?
    /// Bit i: `highest - i` was taken.
    private var seen: UInt64 = 0

    func contains(_ sequence: UInt16) -> Bool {
        guard let highest else { return false }
        let behind = highest &- sequence
        return behind < Self.size && seen & (1 << UInt64(behind)) != 0
    }

    mutating func insert(_ sequence: UInt16) {
        guard let current = highest else {
            highest = sequence
            seen = 1
            return
        }
        let ahead = sequence &- current
        if ahead != 0, ahead < 0x8000 {
            seen = ahead >= Self.size ? 1 : seen << UInt64(ahead) | 1
            highest = sequence
        } else if current &- sequence < Self.size {
            seen |= 1 << UInt64(current &- sequence)
        }
    }
}
