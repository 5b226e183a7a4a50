/// Counters and figures for one call's incoming audio.
public struct ReceiverStats: Sendable, Codable, Equatable {
    /// Well-formed Opus RTP packets, duplicates and late ones included.
    public var packetsReceived = 0
    /// Sequence numbers never received (RFC 3550 §6.4.1: expected minus received).
    public var packetsLost = 0
    /// Packets that arrived after their time had played (or would have played later than the delay ceiling,
    /// or past a fixed buffer's target); dropped.
    public var packetsLate = 0
    public var duplicates = 0
    /// Frames (20 ms) played by packet loss concealment.
    public var framesConcealed = 0
    /// Packets rebuilt from the FEC data of the following packet.
    public var fecRecovered = 0
    /// Lost packets played from a redundant copy carried by a later packet.
    public var redundancyRecovered = 0
    /// Packets refused: not RTP, not Opus's payload types (plain or redundant), or an Opus payload that fails to
    /// decode.
    public var malformed = 0
    /// Arrival to playout of the latest speech packet played (not updated in DTX: a refresh packet's wait
    /// through the comfort noise delays nothing audible); the mean and the 95th percentile of every packet played.
    public var currentPlayoutDelayMs = 0.0
    public var meanPlayoutDelayMs = 0.0
    public var p95PlayoutDelayMs = 0.0
    /// The delay the buffer aims for now.
    public var targetDelayMs = 0.0
    /// RFC 3550 §6.4.1 interarrival jitter.
    public var jitterMs = 0.0
    /// Late packets per packet expected, %.
    public var lateLossPercent = 0.0
    /// Concealed audio per audio played, %.
    public var concealmentPercent = 0.0
    /// Samples removed or inserted by time-stretching per audio played, %.
    public var timeStretchPercent = 0.0
    /// Comfort noise (the sender in DTX) per audio played, %.
    public var dtxPercent = 0.0
    /// Estimated sender/receiver clock skew (positive: the sender's clock is fast); nil until known.
    public var driftPpm: Double?
    /// Delay spikes seen.
    public var delaySpikes = 0
    /// Decisions taken, by kind.
    public var decisions = Decisions()

    public struct Decisions: Sendable, Codable, Equatable {
        public var normal = 0, merge = 0, accelerate = 0, decelerate = 0, fec = 0, expand = 0, comfortNoise = 0

        public init() {}
    }

    public init() {}
}

/// The receiving half of a call's media: parses plaintext RTP (after `SRTPContext.unprotect`), files it and
/// any redundant copies it carries in a `PlayoutBuffer`, and produces one 20 ms frame per `nextFrame` call by
/// carrying out the buffer's decisions (decode, FEC, conceal, comfort noise, time-stretch). It keeps the loss
/// report for the peer's sender (`report`) and the latest report the peer sent (`peerReport`). Pure: time comes
/// in as `nowMs`.
public final class MediaReceiver {
    private let decoder: OpusDecoder
    private var buffer: PlayoutBuffer
    /// Decoded samples not yet played.
    private var sync: [Int16] = []
    private var counts = ReceiverStats()
    private var concealedSamples = 0
    private var comfortNoiseSamples = 0
    private var stretchedSamples = 0
    private var playedSamples = 0

    public init(config: MediaConfig) throws(MediaError) {
        decoder = try OpusDecoder()
        buffer = PlayoutBuffer(config: config)
    }

    /// Well-formed packets received so far (cheaper than `stats`).
    public var packetsReceived: Int { counts.packetsReceived }

    /// The loss the peer's sender reported in its latest packet, nil before one arrives.
    public private(set) var peerReport: LossReport?

    /// What this receiver reports to the peer's sender.
    public var report: LossReport { buffer.lossReport }

    /// Files one RTP packet that arrived at `nowMs`. False (and counted) when it is malformed.
    public func receive(rtp: [UInt8], nowMs: Int64) -> Bool {
        guard let packet = RTPPacket(parsing: rtp), let (primary, blocks) = Self.opus(in: packet),
              let samples = OpusDecoder.samples(in: primary)
        else {
            counts.malformed += 1
            return false
        }
        counts.packetsReceived += 1
        if let bytes = packet.extensions[LossReport.extensionID], let report = LossReport(bytes: bytes) {
            peerReport = report
        }
        let level = packet.extensions[AudioLevel.extensionID].flatMap(AudioLevel.init(bytes:))
        // The copies a packet carries are filed only when the packet itself was: a duplicate, late or
        // out-of-range packet's copies could otherwise reach far past the stream.
        guard buffer.insert(sequence: packet.sequence, timestamp: packet.timestamp, ssrc: packet.ssrc,
                            payload: primary, samples: samples, arrivalMs: nowMs, voice: level?.voice)
        else { return true }
        buffer.noteRedundancy(distance: blocks.map { Int($0.distance) }.max() ?? 0)
        for block in blocks {
            guard let copySamples = OpusDecoder.samples(in: block.opus) else { continue }
            buffer.insertRecovered(sequence: packet.sequence &- UInt16(block.distance),
                                   timestamp: packet.timestamp &- UInt32(block.offset), ssrc: packet.ssrc,
                                   payload: block.opus, samples: copySamples, arrivalMs: nowMs)
        }
        return true
    }

    /// The packet's own Opus packet and its redundant blocks; nil for another payload type or a malformed one.
    private static func opus(in packet: RTPPacket) -> (primary: [UInt8], blocks: [RedundantPayload.Block])? {
        switch packet.payloadType {
        case MediaSender.payloadType:
            return (packet.payload, [])
        case RedundantPayload.payloadType:
            return RedundantPayload(parsing: packet.payload).map { ($0.primary, $0.blocks) }
        default:
            return nil
        }
    }

    /// The sender stopped for a while (the call was held): what waits is dropped and its next packet starts the
    /// stream afresh, as a new SSRC would, instead of the pause being played out as a gap to fill.
    public func endStream() {
        buffer.endStream()
        sync = []
    }

    /// The next 20 ms of audio, `Audio.frameSamples` samples; the owner calls this every 20 ms.
    public func nextFrame(nowMs: Int64) -> [Int16] {
        buffer.tick(nowMs: nowMs, bufferedSamples: sync.count)
        var audible = true
        while sync.count < Audio.frameSamples {
            let decision = buffer.decide(nowMs: nowMs, bufferedSamples: sync.count)
            if case .silence = decision { audible = false }
            sync += run(decision)
        }
        if audible { playedSamples += Audio.frameSamples }
        let frame = Array(sync.prefix(Audio.frameSamples))
        sync.removeFirst(Audio.frameSamples)
        return frame
    }

    private func run(_ decision: PlayoutBuffer.Decision) -> [Int16] {
        switch decision {
        case .silence(let samples):
            return [Int16](repeating: 0, count: samples)
        case .normal(let packet):
            counts.decisions.normal += 1
            return decode(packet)
        case .merge(let packet):
            counts.decisions.merge += 1
            return decode(packet)
        case .accelerate(let packet):
            return stretch(decode(packet), TimeStretch.accelerate, counted: \.accelerate)
        case .decelerate(let packet):
            return stretch(decode(packet), TimeStretch.decelerate, counted: \.decelerate)
        case .fec(let next, let samples):
            if let pcm = decoder.decodeFEC(from: next.payload, samples: samples) {
                counts.decisions.fec += 1
                counts.fecRecovered += 1
                return pcm
            }
            counts.malformed += 1
            return conceal(samples)
        case .expand(let samples):
            return conceal(samples)
        case .comfortNoise(let samples):
            counts.decisions.comfortNoise += 1
            comfortNoiseSamples += samples
            return decoder.conceal(samples: samples)
        }
    }

    private func decode(_ packet: PlayoutBuffer.Packet) -> [Int16] {
        if let pcm = decoder.decode(packet.payload), pcm.count == packet.samples {
            if packet.recovered { counts.redundancyRecovered += 1 }
            return pcm
        }
        counts.malformed += 1
        return conceal(packet.samples)
    }

    private func conceal(_ samples: Int) -> [Int16] {
        counts.decisions.expand += 1
        concealedSamples += samples
        return decoder.conceal(samples: samples)
    }

    /// `pcm` time-stretched by `method` (unchanged when it finds no period to splice), counted as `decision`.
    private func stretch(_ pcm: [Int16], _ method: ([Int16]) -> [Int16]?,
                         counted decision: WritableKeyPath<ReceiverStats.Decisions, Int>) -> [Int16] {
        guard let stretched = method(pcm) else { return pcm }
        counts.decisions[keyPath: decision] += 1
        let removed = pcm.count - stretched.count
        stretchedSamples += abs(removed)
        buffer.stretched(removing: removed)
        return stretched
    }

    /// Packets buffered and not yet played.
    public var bufferedPackets: Int { buffer.waiting }

    /// Arrival to playout of the latest speech packet played (see `ReceiverStats`); nil before the first packet.
    public var currentPlayoutDelayMs: Double? { buffer.delays.count == 0 ? nil : buffer.currentDelayMs }

    public var stats: ReceiverStats {
        var stats = counts
        let played = Double(max(1, playedSamples))
        stats.packetsLost = buffer.lost
        stats.packetsLate = buffer.late
        stats.duplicates = buffer.duplicates
        stats.framesConcealed = (concealedSamples + Audio.frameSamples / 2) / Audio.frameSamples
        stats.currentPlayoutDelayMs = buffer.currentDelayMs
        stats.meanPlayoutDelayMs = buffer.delays.mean
        stats.p95PlayoutDelayMs = buffer.delays.p95
        stats.targetDelayMs = buffer.currentTargetMs
        stats.jitterMs = buffer.jitterMs
        stats.lateLossPercent = 100 * Double(buffer.late) / Double(max(1, buffer.expected))
        stats.concealmentPercent = 100 * Double(concealedSamples) / played
        stats.timeStretchPercent = 100 * Double(stretchedSamples) / played
        stats.dtxPercent = 100 * Double(comfortNoiseSamples) / played
        stats.driftPpm = buffer.driftPpm
        stats.delaySpikes = buffer.spikes
        return stats
    }
}


