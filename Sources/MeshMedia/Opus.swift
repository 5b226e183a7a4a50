internal import COpus

/// An Opus encoder for 48 kHz mono voice (OPUS_APPLICATION_VOIP, signal voice). Not thread-safe: one owner
/// encodes.
public final class OpusEncoder {
    /// RFC 6716 §3.4: an Opus packet is at most 1275 bytes per frame.
    private static let maxPacketBytes = 1275
    private let state: OpaquePointer

    public init(config: MediaConfig) throws(MediaError) {
        var error: Int32 = 0
        guard let state = opus_encoder_create(Int32(Audio.sampleRate), 1, OPUS_APPLICATION_VOIP, &error),
              error == OPUS_OK
        else { throw opusError("opus_encoder_create", error) }
        self.state = state
        try check([
            ("complexity \(config.complexity)", mesh_opus_set_complexity(state, Int32(clamping: config.complexity))),
            ("packet loss \(config.expectedLossPercent) %",
             mesh_opus_set_packet_loss_perc(state, Int32(clamping: config.expectedLossPercent))),
            ("DTX", mesh_opus_set_dtx(state, config.dtx ? 1 : 0)),
            ("signal voice", mesh_opus_set_signal_voice(state)),
        ])
        try apply(config.profile)
    }

    deinit { opus_encoder_destroy(state) }

    /// Bitrate and FEC of `profile`, from the next frame on (the frame length is the caller's frame size).
    public func apply(_ profile: QualityProfile) throws(MediaError) {
        try check([
            ("bitrate \(profile.bitrate)", mesh_opus_set_bitrate(state, Int32(clamping: profile.bitrate))),
            ("inband FEC", mesh_opus_set_inband_fec(state, profile.fec ? 1 : 0)),
        ])
    }

    /// Encodes one frame of 20 or 40 ms (960 or 1920 samples). With DTX on, a packet of one or two bytes
    /// marks silence.
    public func encode(_ pcm: [Int16]) throws(MediaError) -> [UInt8] {
        guard pcm.count == Audio.frameSamples || pcm.count == 2 * Audio.frameSamples else {
            throw MediaError("opus encode: frame has \(pcm.count) samples, expected 960 or 1920")
        }
        var packet = [UInt8](repeating: 0, count: Self.maxPacketBytes)
        let length = opus_encode(state, pcm, Int32(pcm.count), &packet, Int32(packet.count))
        guard length > 0 else { throw opusError("opus_encode", length) }
        return Array(packet.prefix(Int(length)))
    }

    private func check(_ settings: [(String, Int32)]) throws(MediaError) {
        for (name, status) in settings where status != OPUS_OK {
            throw opusError("opus encoder setting \(name)", status)
        }
    }
}

/// An Opus decoder for 48 kHz mono. Feed it every stretch of time in order: a packet (`decode`), the next
/// packet's FEC copy of a lost one (`decodeFEC`), or nothing (`conceal`, which after a DTX packet is comfort
/// noise), so its state stays continuous. Not thread-safe: one owner decodes.
public final class OpusDecoder {
    /// RFC 6716 §3.2.5: a packet carries at most 120 ms of audio.
    static let maxPacketSamples = Audio.sampleRate * 120 / 1000
    private let state: OpaquePointer

    public init() throws(MediaError) {
        var error: Int32 = 0
        guard let state = opus_decoder_create(Int32(Audio.sampleRate), 1, &error), error == OPUS_OK else {
            throw opusError("opus_decoder_create", error)
        }
        self.state = state
    }

    deinit { opus_decoder_destroy(state) }

    /// How many 48 kHz samples `packet` carries (its TOC byte says), or nil when it is not a valid Opus packet.
    public static func samples(in packet: [UInt8]) -> Int? {
        guard !packet.isEmpty else { return nil }
        let count = opus_packet_get_nb_samples(packet, Int32(packet.count), Int32(Audio.sampleRate))
        return count > 0 && count <= maxPacketSamples ? Int(count) : nil
    }

    /// The packet's samples (960 for a 20 ms packet), or nil when the packet is corrupt.
    public func decode(_ packet: [UInt8]) -> [Int16]? {
        guard !packet.isEmpty else { return nil }
        return run(packet, samples: Self.maxPacketSamples, fec: false)
    }

    /// `samples` rebuilt from the FEC data in `next`, the packet after a lost one (`samples` is the lost
    /// packet's length, a multiple of 2.5 ms). When `next` carries no FEC data, libopus conceals instead.
    /// Nil when the packet is corrupt.
    public func decodeFEC(from next: [UInt8], samples: Int = Audio.frameSamples) -> [Int16]? {
        guard !next.isEmpty else { return nil }
        return run(next, samples: samples, fec: true)
    }

    /// `samples` (a multiple of 2.5 ms) of packet loss concealment, continuing from the decoder's state;
    /// after a DTX packet, comfort noise.
    public func conceal(samples: Int = Audio.frameSamples) -> [Int16] {
        run(nil, samples: samples, fec: false) ?? [Int16](repeating: 0, count: samples)
    }

    private func run(_ packet: [UInt8]?, samples: Int, fec: Bool) -> [Int16]? {
        var pcm = [Int16](repeating: 0, count: samples)
        let count = packet.withOptionalBuffer { bytes in
            opus_decode(state, bytes.baseAddress, Int32(bytes.count), &pcm, Int32(samples), fec ? 1 : 0)
        }
        guard count > 0 else { return nil }
        pcm.removeSubrange(Int(count)...)
        return pcm
    }
}

private extension Optional where Wrapped == [UInt8] {
    /// The bytes, or an empty buffer with a nil base address (Opus's "packet lost").
    func withOptionalBuffer<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        switch self {
        case .some(let bytes): bytes.withUnsafeBufferPointer(body)
        case .none: body(UnsafeBufferPointer(start: nil, count: 0))
        }
    }
}

private func opusError(_ what: String, _ code: Int32) -> MediaError {
    MediaError("\(what) failed: \(String(cString: opus_strerror(code)))")
}
