internal import CSpeexDSP

/// The sender's input conditioning with the speexdsp preprocessor, one 20 ms frame at a time: noise
/// suppression and voice activity detection. Not thread-safe: one owner.
public final class Preprocessor {
    /// Non-speech frames (after the hangover) are attenuated by this factor (−30 dB) when the VAD is on, so
    /// Opus DTX engages over steady background noise while the receiver's comfort noise keeps its colour.
    static let gateGain: Int32 = 32
    /// Frames of non-speech the VAD waits before gating (200 ms), so word endings are not cut.
    static let hangoverFrames = 10

    private let state: OpaquePointer
    private let gate: Bool
    private var quietFrames = 0
    /// Frames the VAD judged speech / all frames seen.
    public private(set) var speechFrames = 0
    public private(set) var frames = 0

    /// Nil when neither denoise nor VAD is wanted.
    public init?(denoise: Bool, vad: Bool) {
        guard denoise || vad, let state = speex_preprocess_state_init(Int32(Audio.frameSamples), Int32(Audio.sampleRate))
        else { return nil }
        self.state = state
        gate = vad
        _ = mesh_speex_preprocess_set_int(state, SPEEX_PREPROCESS_SET_DENOISE, denoise ? 1 : 0)
        _ = mesh_speex_preprocess_set_int(state, SPEEX_PREPROCESS_SET_VAD, vad ? 1 : 0)
    }

    deinit { speex_preprocess_state_destroy(state) }

    /// The conditioned frame (`Audio.frameSamples` samples).
    public func process(_ frame: [Int16]) -> [Int16] {
        var pcm = frame
        let speech = pcm.withUnsafeMutableBufferPointer { speex_preprocess_run(state, $0.baseAddress) } != 0
        frames += 1
        guard gate else { return pcm }
        if speech {
            speechFrames += 1
            quietFrames = 0
            return pcm
        }
        quietFrames += 1
        guard quietFrames > Self.hangoverFrames else { return pcm }
        return pcm.map { $0 / Int16(Self.gateGain) }
    }
}
