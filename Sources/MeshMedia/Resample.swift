internal import CSpeexDSP

/// Conversion of any PCM input to the media core's 48 kHz mono.
public enum Resample {
    /// speexdsp's quality scale is 0...10; 8 is transparent for speech at modest cost.
    private static let quality: Int32 = 8

    /// Averages the channels of interleaved `samples`, then resamples to 48 kHz with the speexdsp resampler.
    /// The output is aligned with the input (the filter delay is removed) and has
    /// round(frames × 48000 / sampleRate) samples. Already 48 kHz mono input comes back unchanged.
    public static func toMono48k(samples: [Int16], sampleRate: Int, channels: Int) throws(MediaError) -> [Int16] {
        guard channels >= 1, samples.count % channels == 0 else {
            throw MediaError("resample: \(samples.count) samples do not split into \(channels) channels")
        }
        guard (1...1_000_000).contains(sampleRate) else { throw MediaError("resample: sample rate \(sampleRate) Hz") }
        let mono = channels == 1 ? samples : downmix(samples, channels: channels)
        guard sampleRate != Audio.sampleRate, !mono.isEmpty else { return mono }
        return try resample(mono, from: sampleRate)
    }

    private static func downmix(_ samples: [Int16], channels: Int) -> [Int16] {
        (0..<samples.count / channels).map { frame in
            var sum = 0
            for channel in 0..<channels { sum += Int(samples[frame * channels + channel]) }
            return Int16(sum / channels)
        }
    }

    private static func resample(_ input: [Int16], from rate: Int) throws(MediaError) -> [Int16] {
        var error: Int32 = 0
        guard let state = speex_resampler_init(1, UInt32(rate), UInt32(Audio.sampleRate), quality, &error) else {
            throw MediaError("speex_resampler_init failed: \(String(cString: speex_resampler_strerror(error)))")
        }
        defer { speex_resampler_destroy(state) }
        speex_resampler_skip_zeros(state)
        let expected = Int((Double(input.count) * Double(Audio.sampleRate) / Double(rate)).rounded())
        // Zeros after the input push the filter's tail out.
        let padded = input + [Int16](repeating: 0, count: Int(speex_resampler_get_input_latency(state)) + 1)
        var output = [Int16](repeating: 0, count: expected)
        var produced = 0
        let status = padded.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                var consumed = 0
                while consumed < source.count, produced < target.count {
                    var inLength = UInt32(source.count - consumed)
                    var outLength = UInt32(target.count - produced)
                    let status = speex_resampler_process_int(state, 0, source.baseAddress! + consumed, &inLength,
                                                             target.baseAddress! + produced, &outLength)
                    guard status == 0 else { return status }
                    guard inLength > 0 || outLength > 0 else { break }
                    consumed += Int(inLength)
                    produced += Int(outLength)
                }
                return 0
            }
        }
        guard status == 0 else {
            throw MediaError("speex_resampler_process_int failed: \(String(cString: speex_resampler_strerror(status)))")
        }
        return Array(output.prefix(produced))
    }
}

extension WAV {
    /// A WAV file of any rate and channel count, as the 48 kHz mono samples the media core works in.
    public static func readMono48k(path: String) throws(MediaError) -> [Int16] {
        let wav = try read(path: path)
        return try Resample.toMono48k(samples: wav.samples, sampleRate: wav.sampleRate, channels: wav.channels)
    }
}
