import Foundation
import MeshMedia
import Testing

@Suite struct WAVTests {
    @Test func writeReadRoundTrip() throws {
        try withTemporaryDirectory { directory in
            let mono = TestAudio.noise(count: 4801)
            try WAV.write(path: directory + "/mono.wav", samples: mono, sampleRate: 48_000)
            let readMono = try WAV.read(path: directory + "/mono.wav")
            #expect(readMono.samples == mono)
            #expect(readMono.sampleRate == 48_000)
            #expect(readMono.channels == 1)
            #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/mono.wav")).count == 44 + 2 * mono.count)

            let stereo = TestAudio.noise(count: 2 * 441, seed: 2)
            try WAV.write(path: directory + "/stereo.wav", samples: stereo, sampleRate: 44_100, channels: 2)
            let readStereo = try WAV.read(path: directory + "/stereo.wav")
            #expect(readStereo.samples == stereo)
            #expect(readStereo.sampleRate == 44_100)
            #expect(readStereo.channels == 2)
        }
    }

    /// A file made by hand: float samples, an unknown chunk of odd length (with its pad byte) before the data,
    /// and a data size larger than the file, as streaming writers leave it.
    @Test func readsFloatSkipsUnknownChunksAndClampsSize() throws {
        let values: [Float] = [0, 0.5, -0.5, 1, -1, 2]
        var bytes = Array("RIFF".utf8) + le32(0) + Array("WAVE".utf8)
        bytes += Array("fmt ".utf8) + le32(16) + le16(3) + le16(1) + le32(16_000) + le32(64_000) + le16(4) + le16(32)
        bytes += Array("LIST".utf8) + le32(3) + [1, 2, 3, 0]
        bytes += Array("data".utf8) + le32(0xffff_ffff)
        for value in values { bytes += le32(value.bitPattern) }
        try withTemporaryDirectory { directory in
            let path = directory + "/float.wav"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let wav = try WAV.read(path: path)
            #expect(wav.samples == [0, 16384, -16384, 32767, -32767, 32767])
            #expect(wav.sampleRate == 16_000)
        }
    }

    @Test(.enabled(if: TestAudio.soxPath != nil, "sox is not installed"))
    func readsOtherSampleFormatsFromSox() throws {
        try withTemporaryDirectory { directory in
            let source = directory + "/source.wav"
            let original = TestAudio.sine(hz: 1000, count: 4800, amplitude: 20_000)
            try WAV.write(path: source, samples: original, sampleRate: 48_000)
            for (name, options) in [("u8", ["-e", "unsigned-integer", "-b", "8"]), ("s24", ["-b", "24"]),
                                    ("s32", ["-b", "32"]), ("f32", ["-e", "floating-point", "-b", "32"])] {
                let path = directory + "/\(name).wav"
                try TestAudio.run(try #require(TestAudio.soxPath), ["-D", source] + options + [path])
                let wav = try WAV.read(path: path)
                #expect(wav.sampleRate == 48_000 && wav.channels == 1, "\(name)")
                let tolerance = name == "u8" ? 256 : 1
                let worst = zip(wav.samples, original).map { abs(Int($0) - Int($1)) }.max() ?? .max
                #expect(wav.samples.count == original.count && worst <= tolerance, "\(name): off by \(worst)")
            }
        }
    }

    @Test(.enabled(if: TestAudio.espeakPath != nil, "espeak-ng is not installed"))
    func readsEspeakOutput() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/hello.wav"
            try TestAudio.espeak("hello mesh", to: path)
            let wav = try WAV.read(path: path)
            #expect(wav.sampleRate == 22_050)
            #expect(wav.channels == 1)
            #expect(wav.samples.count > 22_050 / 2)
            #expect(TestAudio.energy(wav.samples) > 100_000)
        }
    }

    @Test func clearErrors() throws {
        try withTemporaryDirectory { directory in
            let missing = directory + "/missing.wav"
            #expect(throws: MediaError("\(missing): No such file or directory")) { try WAV.read(path: missing) }
            let text = directory + "/text.wav"
            try Data("hello, this is not audio".utf8).write(to: URL(fileURLWithPath: text))
            #expect(throws: MediaError("\(text): not a RIFF/WAVE file")) { try WAV.read(path: text) }
            let adpcm = directory + "/adpcm.wav"
            var bytes = Array("RIFF".utf8) + le32(0) + Array("WAVE".utf8)
            bytes += Array("fmt ".utf8) + le32(16) + le16(2) + le16(1) + le32(8000) + le32(4000) + le16(256) + le16(4)
            bytes += Array("data".utf8) + le32(0)
            try Data(bytes).write(to: URL(fileURLWithPath: adpcm))
            let error = #expect(throws: MediaError.self) { try WAV.read(path: adpcm) }
            #expect(error?.message.contains("format tag 2, 4 bits") == true)
        }
    }

    @Test func writerKeepsAPlayableFileWhileWriting() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/live.wav"
            let writer = try WAVWriter(path: path, sampleRate: 8000)
            let audio = TestAudio.noise(count: 12_000)
            try writer.append(Array(audio[..<6000]))
            try writer.append(Array(audio[6000...]))
            // Not closed: the header was rewritten after the first second.
            let partial = try WAV.read(path: path)
            #expect(partial.samples == audio)
            #expect(partial.sampleRate == 8000)
            try writer.close()
            try writer.close()
            #expect(try WAV.read(path: path).samples == audio)
            #expect(throws: MediaError.self) { try writer.append([1]) }
        }
    }
}

@Suite struct ResampleTests {
    @Test func espeakRateTo48k() throws {
        let input = TestAudio.noise(count: 22_050 * 2)
        let output = try Resample.toMono48k(samples: input, sampleRate: 22_050, channels: 1)
        #expect(output.count == 96_000)
    }

    @Test func keepsFrequencyAndLevel() throws {
        let rate = 22_050.0
        let input = (0..<22_050).map { Int16(10_000 * sin(2 * .pi * 1000 * Double($0) / rate)) }
        let output = try Resample.toMono48k(samples: input, sampleRate: 22_050, channels: 1)
        let expected = TestAudio.sine(hz: 1000, count: output.count, amplitude: 10_000)
        let match = AudioMatch.compare(reference: expected, recorded: output, maxLagMs: 5)
        #expect(abs(match.lagMs) < 0.05, "\(match)")
        #expect(match.correlation > 0.99, "\(match)")
    }

    @Test func downmixesAndPassesThrough48kMono() throws {
        let left = TestAudio.noise(count: 960, seed: 3)
        let stereo = left.flatMap { [$0, Int16(0)] }
        let mono = try Resample.toMono48k(samples: stereo, sampleRate: 48_000, channels: 2)
        #expect(mono == left.map { $0 / 2 })
        #expect(try Resample.toMono48k(samples: left, sampleRate: 48_000, channels: 1) == left)
        #expect(throws: MediaError.self) { try Resample.toMono48k(samples: [1, 2, 3], sampleRate: 48_000, channels: 2) }
    }
}

private func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xff), UInt8(value >> 8)] }
private func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
