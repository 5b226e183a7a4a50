/// Encodes 20 ms frames to Opus and wraps each packet in plaintext RTP: payload type 111, the sequence
/// number +1 per packet, the timestamp +960 per 20 ms of audio, the marker bit on the first packet of each
/// talk spurt. With DTX, silence after its first DTX packet is not sent (Opus still emits one packet every
/// 400 ms). The profile (bitrate, FEC, 20/40 ms) can change at any frame boundary. With redundancy on, each
/// packet also carries a copy of an earlier one (`RedundantPayload`, payload type 112): the packet two back
/// when FEC is on (the next packet's FEC data rebuilds the one in between, and the copy's own FEC data the one
/// before it, so bursts of up to three losses are rebuilt), the previous one without FEC. SRTP protection is the
/// caller's next step (`SRTPContext.protect`).
public final class MediaSender {
    /// The dynamic payload type used for Opus (the common choice, as in WebRTC).
    public static let payloadType: UInt8 = 111
    /// RFC 6716 / WebRTC: an Opus packet of at most 2 bytes is a DTX frame (no audio to send).
    static func isDTX(_ opus: [UInt8]) -> Bool { opus.count <= 2 }
    /// With the VAD on: non-speech frames sent before the sender goes into DTX (word endings and short gaps).
    static let vadHangoverFrames = 5
    /// In DTX a comfort-noise refresh (a real packet) goes out every 400 ms, as libopus's own DTX does.
    static let refreshMs = 400

    public let ssrc: UInt32
    /// RTP packets made.
    public private(set) var packetsSent = 0
    /// 20 ms frames taken in.
    public private(set) var framesIn = 0
    /// 20 ms frames not sent because the encoder was in DTX.
    public private(set) var framesSuppressed = 0
    /// Packets that carried a redundant copy of an earlier one.
    public private(set) var packetsWithRedundancy = 0
    /// Payload bytes (Opus, redundant copies included) of the packets made.
    public private(set) var payloadBytes = 0
    public private(set) var profile: QualityProfile
    private let encoder: OpusEncoder
    private let preprocessor: Preprocessor?
    private var sequence: UInt16
    /// The RTP timestamp of the next frame taken in.
    private var timestamp: UInt32
    /// The first half of a 40 ms packet.
    private var held: [Int16] = []
    private var pendingProfile: QualityProfile?
    private var inDTX = false
    /// With the VAD on: non-speech frames in a row, packets since the VAD's DTX began (0: not in it), and
    /// whether a frame of the packet being assembled was speech.
    private var quietFrames = 0
    private var vadDTXPackets = 0
    private var heldSpeech: Bool?
    private let redundancy: RedundancyMode
    private var policy = RedundancyPolicy()
    /// The latest packets sent, newest last, for redundant copies.
    private var history: [(sequence: UInt16, timestamp: UInt32, opus: [UInt8])] = []

    /// RFC 3550 §5.1 recommends random initial sequence numbers and timestamps; pass them in to get that.
    public init(config: MediaConfig, ssrc: UInt32, initialSequence: UInt16 = 0, initialTimestamp: UInt32 = 0)
        throws(MediaError) {
        try Self.validate(config.profile)
        encoder = try OpusEncoder(config: config)
        preprocessor = Preprocessor(denoise: config.denoise, vad: config.vad)
        profile = config.profile
        redundancy = config.redundancy
        self.ssrc = ssrc
        sequence = initialSequence
        timestamp = initialTimestamp
    }

    /// Switches to `profile` at the next packet boundary (at once, unless half of a 40 ms packet is held).
    public func apply(_ profile: QualityProfile) throws(MediaError) {
        try Self.validate(profile)
        if held.isEmpty {
            try encoder.apply(profile)
            self.profile = profile
            pendingProfile = nil
        } else {
            pendingProfile = profile
        }
    }

    /// Whether packets carry redundant copies now.
    public var redundant: Bool {
        switch redundancy {
        case .on: true
        case .off: false
        case .auto: policy.active
        }
    }

    /// The peer receiver's latest loss report (`MediaReceiver.peerReport`): with `RedundancyMode.auto` it
    /// switches the redundant copies on or off from the next packet.
    public func apply(report: LossReport) {
        _ = policy.update(report, fec: profile.fec)
    }

    /// The share of frames the VAD judged speech, when it is on.
    public var speechPercent: Double? {
        guard let preprocessor, preprocessor.frames > 0 else { return nil }
        return 100 * Double(preprocessor.speechFrames) / Double(preprocessor.frames)
    }

    /// A 20 ms frame that is not sent (the call is held, or quelched by a node on its path): the RTP clock moves on
    /// and nothing is encoded; the half of a 40 ms packet waiting is dropped, and the next packet starts a talkspurt
    /// (marker set, no redundant copies of what came before).
    public func skip() {
        timestamp &+= UInt32(held.count + Audio.frameSamples)
        held = []
        heldSpeech = nil
        history = []
        inDTX = true
    }

    /// Takes the next 20 ms frame (`Audio.frameSamples` samples). Returns the RTP packet to send, or nil
    /// when there is nothing to send (DTX silence, or the first half of a 40 ms packet). `report`, this side's
    /// receiver's loss report for the peer, rides in the packet's header extension.
    public func packetize(frame: [Int16], report: LossReport? = nil) throws(MediaError) -> [UInt8]? {
        guard frame.count == Audio.frameSamples else {
            throw MediaError("sender: frame has \(frame.count) samples, expected \(Audio.frameSamples)")
        }
        framesIn += 1
        if let preprocessor {
            let (pcm, speech) = preprocessor.process(frame)
            held += pcm
            if let speech {
                quietFrames = speech ? 0 : quietFrames + 1
                heldSpeech = speech || heldSpeech == true
            }
        } else {
            held += frame
        }
        guard held.count >= profile.frameMs * Audio.samplesPerMs else { return nil }
        let pcm = held
        held = []
        let level = heldSpeech.map { AudioLevel(voice: $0, samples: pcm) }
        heldSpeech = nil
        let packetTimestamp = timestamp
        timestamp &+= UInt32(pcm.count)
        var payload = try encoder.encode(pcm)
        if let next = pendingProfile {
            try encoder.apply(next)
            profile = next
            pendingProfile = nil
        }
        if level != nil { payload = vadDTX(payload, frames: pcm.count / Audio.frameSamples) }
        let dtx = Self.isDTX(payload)
        defer { inDTX = dtx }
        // In the VAD's DTX only its first DTX packet goes out: the refreshes say V = 0 themselves.
        if dtx, inDTX || vadDTXPackets > 1 {
            framesSuppressed += pcm.count / Audio.frameSamples
            return nil
        }
        let blocks = redundantBlocks(timestamp: packetTimestamp)
        let packet = RTPPacket(
            payloadType: blocks.isEmpty ? Self.payloadType : RedundantPayload.payloadType,
            marker: packetsSent == 0 || inDTX, sequence: sequence, timestamp: packetTimestamp, ssrc: ssrc,
            payload: blocks.isEmpty ? payload : RedundantPayload(blocks: blocks, primary: payload).serialize(),
            extensions: Self.extensions(report: report, level: level))
        history.append((sequence, packetTimestamp, payload))
        if history.count > 2 { history.removeFirst() }
        sequence &+= 1
        packetsSent += 1
        if !blocks.isEmpty { packetsWithRedundancy += 1 }
        payloadBytes += packet.payload.count
        return packet.serialize()
    }

    /// The copy this packet carries when redundancy is on: the packet `distance` back, if it was sent and its
    /// timestamp is within reach of the 16-bit offset.
    private func redundantBlocks(timestamp: UInt32) -> [RedundantPayload.Block] {
        guard redundant else { return [] }
        let distance = profile.fec ? 2 : 1
        guard history.count >= distance else { return [] }
        let old = history[history.count - distance]
        let offset = timestamp &- old.timestamp
        guard old.sequence &+ UInt16(distance) == sequence, (1...UInt32(UInt16.max)).contains(offset) else {
            return []
        }
        return [RedundantPayload.Block(distance: UInt8(distance), offset: UInt16(offset), opus: old.opus)]
    }

    private static func extensions(report: LossReport?, level: AudioLevel?) -> [UInt8: [UInt8]] {
        var elements: [UInt8: [UInt8]] = [:]
        if let report { elements[LossReport.extensionID] = report.bytes }
        if let level { elements[AudioLevel.extensionID] = level.bytes }
        return elements
    }

    /// With the VAD on, once `vadHangoverFrames` frames of non-speech have been sent the sender goes into DTX
    /// itself instead of waiting for libopus's own (which takes 200 ms of quiet, and over steady background
    /// noise may never come): each packet becomes a DTX packet (its TOC byte alone, which a decoder takes as "no
    /// audio": comfort noise) except a refresh every `refreshMs`, as libopus does. The encoder still encodes
    /// every frame, so its state and the refreshes follow the input.
    private func vadDTX(_ payload: [UInt8], frames: Int) -> [UInt8] {
        guard quietFrames > Self.vadHangoverFrames else {
            vadDTXPackets = 0
            return payload
        }
        defer { vadDTXPackets += 1 }
        let refreshEvery = max(1, Self.refreshMs / (frames * Audio.frameMs))
        if vadDTXPackets > 0, vadDTXPackets % refreshEvery == 0 { return payload }
        return [payload[0] & 0xfc]
    }

    private static func validate(_ profile: QualityProfile) throws(MediaError) {
        guard profile.frameMs == 20 || profile.frameMs == 40 else {
            throw MediaError("profile \(profile.name): frames of \(profile.frameMs) ms; use 20 or 40")
        }
    }
}
