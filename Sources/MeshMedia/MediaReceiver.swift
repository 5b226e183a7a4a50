/// Counters for one call's incoming audio.
public struct ReceiverStats: Sendable, Codable, Equatable {
    /// Well-formed Opus RTP packets, duplicates and late ones included.
    public var packetsReceived = 0
    /// Sequence numbers never received (RFC 3550 §6.4.1: expected minus received).
    public var packetsLost = 0
    /// Packets that arrived after their slot had played; dropped.
    public var packetsLate = 0
    public var duplicates = 0
    /// Frames played by packet loss concealment, including frames the sender never sent (pauses).
    public var framesConcealed = 0
    /// Frames rebuilt from the FEC data of the following packet.
    public var fecRecovered = 0
    /// Packets refused: not RTP, not Opus's payload type, or an Opus payload that fails to decode.
    public var malformed = 0
    /// Arrival to playout, over all packets played.
    public var meanPlayoutDelayMs = 0.0
    /// RFC 3550 §6.4.1 interarrival jitter.
    public var jitterMs = 0.0
    /// Arrival to playout of the latest packet played.
    public var currentPlayoutDelayMs = 0.0

    public init() {}
}

/// The receiving half of a call's media: parses plaintext RTP (after `SRTPContext.unprotect`), buffers it in
/// a `PlayoutBuffer`, and decodes one 20 ms frame per `nextFrame` call. Pure: time comes in as `nowMs`.
public final class MediaReceiver {
    private let decoder: OpusDecoder
    private let useFEC: Bool
    private var buffer: PlayoutBuffer
    private var counts = ReceiverStats()

    public init(config: MediaConfig) throws(MediaError) {
        decoder = try OpusDecoder()
        useFEC = config.fec
        buffer = PlayoutBuffer(targetMs: config.playoutTargetMs)
    }

    /// Files one RTP packet that arrived at `nowMs`. False (and counted) when it is malformed.
    public func receive(rtp: [UInt8], nowMs: Int64) -> Bool {
        guard let packet = RTPPacket(parsing: rtp), packet.payloadType == MediaSender.payloadType,
              !packet.payload.isEmpty
        else {
            counts.malformed += 1
            return false
        }
        counts.packetsReceived += 1
        buffer.insert(sequence: packet.sequence, timestamp: packet.timestamp, ssrc: packet.ssrc,
                      payload: packet.payload, arrivalMs: nowMs)
        return true
    }

    /// The next 20 ms of audio, `Audio.frameSamples` samples; the owner calls this every 20 ms.
    public func nextFrame(nowMs: Int64) -> [Int16] {
        switch buffer.nextDecision(nowMs: nowMs) {
        case .silence:
            return [Int16](repeating: 0, count: Audio.frameSamples)
        case .play(let payload):
            if let frame = decoder.decode(payload), frame.count == Audio.frameSamples { return frame }
            counts.malformed += 1
        case .recover(let next):
            if useFEC, let frame = decoder.decodeFEC(from: next) {
                counts.fecRecovered += 1
                return frame
            }
        case .conceal:
            break
        }
        counts.framesConcealed += 1
        return decoder.conceal()
    }

    public var stats: ReceiverStats {
        var stats = counts
        stats.packetsLost = buffer.lost
        stats.packetsLate = buffer.late
        stats.duplicates = buffer.duplicates
        stats.meanPlayoutDelayMs = buffer.meanDelayMs
        stats.currentPlayoutDelayMs = buffer.currentDelayMs
        stats.jitterMs = buffer.jitterMs
        return stats
    }
}
