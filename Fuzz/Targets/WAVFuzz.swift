import MeshMedia

/// WAV files as `--play` and `media-lab --input` read them.
enum WAVFuzz {
    static func run(_ input: [UInt8]) {
        _ = try? WAV.read(path: Fuzz.scratchFile(input, suffix: ".wav"))
    }

    /// The 16-bit files the project writes (mono and stereo), and the same header declaring the other encodings
    /// the reader takes: 8, 24 and 32-bit PCM, 32-bit float.
    static func seeds() -> [[UInt8]] {
        let samples = (0..<64).map { Int16(truncatingIfNeeded: $0 * 997) }
        var files: [[UInt8]] = []
        for channels in [1, 2] {
            let path = Fuzz.scratchPath("-seed.wav")
            do {
                try WAV.write(path: path, samples: samples, sampleRate: 48_000, channels: channels)
                files.append(Fuzz.contents(path))
            } catch {
                fatalError("cannot write a WAV seed: \(error)")
            }
        }
        // fmt chunk: format tag at byte 20, bits per sample at byte 34.
        for (tag, bits) in [(1, 8), (1, 24), (1, 32), (3, 32)] {
            var file = files[0]
            file[20] = UInt8(tag)
            file[34] = UInt8(bits)
            files.append(file)
        }
        return files
    }
}
