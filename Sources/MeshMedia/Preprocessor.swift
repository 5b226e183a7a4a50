internal import CSpeexDSP

/// The sender's input conditioning with the speexdsp preprocessor, one 20 ms frame at a time: noise
/// suppression, and voice activity detection for the sender's own DTX (`MediaSender`). Not thread-safe: one
/// owner.
public final class Preprocessor {
    /// speexdsp's VAD calls a frame speech when its speech probability is above `probabilityStart` %, or above
    /// `probabilityContinue` % right after speech. Its defaults (35 / 20) call 74 % of the benchmark's speech
    /// (63 % talk) speech and hold on through the pauses; 80 / 65 follows the talk spurts closely, and the
    /// sender's hangover protects word endings.
    static let probabilityStart: Int32 = 80
    static let probabilityContinue: Int32 = 65

    private let state: OpaquePointer
    private let vad: Bool
    /// Frames the VAD judged speech / all frames seen.
    public private(set) var speechFrames = 0
    public private(set) var frames = 0

    /// Nil when neither denoise nor VAD is wanted.
    public init?(denoise: Bool, vad: Bool) {
        guard denoise || vad, let state = speex_preprocess_state_init(Int32(Audio.frameSamples), Int32(Audio.sampleRate))
        else { return nil }
        self.state = state
        self.vad = vad
        _ = mesh_speex_preprocess_set_int(state, SPEEX_PREPROCESS_SET_DENOISE, denoise ? 1 : 0)
        _ = mesh_speex_preprocess_set_int(state, SPEEX_PREPROCESS_SET_VAD, vad ? 1 : 0)
        _ = mesh_speex_preprocess_set_int(state, SPEEX_PREPROCESS_SET_PROB_START, Self.probabilityStart)
        _ = mesh_speex_preprocess_set_int(state, SPEEX_PREPROCESS_SET_PROB_CONTINUE, Self.probabilityContinue)
    }

    deinit { speex_preprocess_state_destroy(state) }

    /// The conditioned frame (`Audio.frameSamples` samples) and, with the VAD on, whether it is speech.
    public func process(_ frame: [Int16]) -> (pcm: [Int16], speech: Bool?) {
        var pcm = frame
        let speech = pcm.withUnsafeMutableBufferPointer { speex_preprocess_run(state, $0.baseAddress) } != 0
        frames += 1
        guard vad else { return (pcm, nil) }
        if speech { speechFrames += 1 }
        return (pcm, speech)
    }
}
