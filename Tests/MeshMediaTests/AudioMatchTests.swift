import MeshMedia
import Testing

@Suite(.enabled(if: TestAudio.espeakPath != nil, "espeak-ng is not installed: no test speech"))
struct AudioMatchTests {
    static let text = "The quick brown fox jumps over the lazy dog. A mesh of nodes carries this voice from end to end."

    @Test func findsTheDelayOfACopy() throws {
        let speech = try TestAudio.speech(Self.text)
        let delay = 123 * Audio.sampleRate / 1000
        let recorded = [Int16](repeating: 0, count: delay) + speech.map { $0 / 2 }
        let match = AudioMatch.compare(reference: speech, recorded: recorded)
        #expect(abs(match.lagMs - 123) < 0.05, "\(match)")
        #expect(match.correlation > 0.95, "\(match)")
        #expect(abs(match.overlapMs - Double(speech.count) * 1000 / 48_000) < 1)

        let early = AudioMatch.compare(reference: speech, recorded: Array(speech[delay...]))
        #expect(abs(early.lagMs + 123) < 0.05, "\(early)")
        #expect(early.correlation > 0.99, "\(early)")
    }

    @Test func matchesTwoOpusPasses() throws {
        let speech = try TestAudio.speech(Self.text)
        var audio = speech
        for _ in 0..<2 {
            let encoder = try OpusEncoder(config: MediaConfig())
            let decoder = try OpusDecoder()
            audio = try TestAudio.frames(audio).flatMap { try #require(decoder.decode(try encoder.encode($0))) }
        }
        let match = AudioMatch.compare(reference: speech, recorded: audio)
        #expect(match.correlation > 0.7, "\(match)")
        #expect(match.lagMs > 0 && match.lagMs < 20, "\(match)")
    }

    /// A stalled feeder's silence steps the echo's delay by 60–100 ms mid-call: the blocks after the step still
    /// find their lag (with ±30 ms around the whole recording's lag they did not: 0.6 of the copy's score).
    @Test(arguments: [60, 100])
    func aDelayStepMidwayMatchesLikeACopy(stepMs: Int) throws {
        let speech = try TestAudio.speech(Self.text)
        let delay = [Int16](repeating: 0, count: 80 * Audio.sampleRate / 1000)
        let half = speech.count / 2
        let copy = delay + speech.map { $0 / 2 }
        let stepped = delay + speech[..<half].map { $0 / 2 } + [Int16](repeating: 0, count: stepMs * Audio.sampleRate / 1000)
            + speech[half...].map { $0 / 2 }
        let unshifted = AudioMatch.compare(reference: speech, recorded: copy)
        let match = AudioMatch.compare(reference: speech, recorded: stepped)
        #expect(match.correlation >= 0.9 * unshifted.correlation, "\(match) against \(unshifted)")
        let other = try TestAudio.speech("Seven silver swans swam silently southward, singing softly at sunset.", voice: "en-us")
        let unrelated = AudioMatch.compare(reference: speech, recorded: delay + other)
        #expect(abs(unrelated.correlation) < 0.3, "\(unrelated)")
    }

    @Test func rejectsUnrelatedAudio() throws {
        let speech = try TestAudio.speech(Self.text)
        let noise = AudioMatch.compare(reference: speech, recorded: TestAudio.noise(count: speech.count))
        #expect(abs(noise.correlation) < 0.3, "\(noise)")
        let other = try TestAudio.speech("Seven silver swans swam silently southward, singing softly at sunset.", voice: "en-us")
        let speechMatch = AudioMatch.compare(reference: speech, recorded: other)
        #expect(abs(speechMatch.correlation) < 0.3, "\(speechMatch)")
    }

    @Test func emptyOrSilentInputGivesZero() {
        #expect(AudioMatch.compare(reference: [], recorded: [1, 2, 3]).correlation == 0)
        let silent = AudioMatch.compare(reference: [Int16](repeating: 0, count: 4800), recorded: TestAudio.noise(count: 4800))
        #expect(silent.correlation == 0)
    }
}
