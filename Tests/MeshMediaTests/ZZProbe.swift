import MeshMedia
import Testing

@Test func zzProbe() throws {
    let text = "The quick brown fox jumps over the lazy dog. A mesh of nodes carries this voice from end to end. And then it goes on speaking for a little while longer to make ten seconds."
    let speech = try TestAudio.speech(text)
    print("PROBE speech seconds", Double(speech.count) / 48000)
    let delayed = [Int16](repeating: 0, count: 5904) + speech
    var clock = ContinuousClock.now
    let m1 = AudioMatch.compare(reference: speech, recorded: delayed)
    print("PROBE self", m1, ContinuousClock.now - clock)
    var audio = speech
    for _ in 0..<2 {
        let encoder = try OpusEncoder(config: MediaConfig())
        let decoder = try OpusDecoder()
        audio = try TestAudio.frames(audio).flatMap { try #require(decoder.decode(try encoder.encode($0))) }
    }
    clock = ContinuousClock.now
    print("PROBE opus2", AudioMatch.compare(reference: speech, recorded: [Int16](repeating: 0, count: 30000) + audio), ContinuousClock.now - clock)
    print("PROBE noise", AudioMatch.compare(reference: speech, recorded: TestAudio.noise(count: speech.count)))
    let other = try TestAudio.speech("Seven silver swans swam silently southward, singing softly at sunset.", voice: "en-us")
    print("PROBE other", AudioMatch.compare(reference: speech, recorded: other))
    let same = try TestAudio.speech(text, voice: "en-us")
    print("PROBE same text other voice", AudioMatch.compare(reference: speech, recorded: same))
}
