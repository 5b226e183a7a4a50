import MeshMedia
import Testing

@Suite struct OpusTests {
    @Test func sineSurvivesEncodeAndDecode() throws {
        var config = MediaConfig()
        config.dtx = false
        let encoder = try OpusEncoder(config: config)
        let decoder = try OpusDecoder()
        let input = TestAudio.sine(hz: 440, count: Audio.sampleRate)
        var output: [Int16] = []
        for frame in TestAudio.frames(input) {
            let packet = try encoder.encode(frame)
            #expect(packet.count > 10 && packet.count < 200)
            let decoded = try #require(decoder.decode(packet))
            #expect(decoded.count == Audio.frameSamples)
            output += decoded
        }
        // Skip the codec's start-up; compare the rest.
        let ratio = TestAudio.energy(output[9600...]) / TestAudio.energy(input[9600...])
        #expect(ratio > 0.7 && ratio < 1.3, "energy ratio \(ratio)")
        let match = AudioMatch.compare(reference: input, recorded: output, maxLagMs: 20)
        #expect(match.correlation > 0.9, "\(match)")
    }

    @Test func fecAndConcealmentGiveFullFrames() throws {
        let encoder = try OpusEncoder(config: MediaConfig())
        let decoder = try OpusDecoder()
        let packets = try TestAudio.frames(TestAudio.sine(hz: 300, count: 10 * Audio.frameSamples)).map(encoder.encode)
        for packet in packets.prefix(5) { _ = try #require(decoder.decode(packet)) }
        let recovered = try #require(decoder.decodeFEC(from: packets[6]))
        #expect(recovered.count == Audio.frameSamples)
        #expect(TestAudio.energy(recovered) > 1_000_000)
        #expect(decoder.conceal().count == Audio.frameSamples)
    }

    @Test func refusesBadInput() throws {
        let encoder = try OpusEncoder(config: MediaConfig())
        #expect(throws: MediaError.self) { try encoder.encode([Int16](repeating: 0, count: 480)) }
        var config = MediaConfig()
        config.complexity = 42
        #expect(throws: MediaError.self) { try OpusEncoder(config: config) }
        let decoder = try OpusDecoder()
        #expect(decoder.decode([]) == nil)
        // Code 3 (arbitrary frame count) with a frame count of zero is invalid.
        #expect(decoder.decode([0x03, 0x00]) == nil)
    }

    @Test func dtxShrinksSilence() throws {
        var config = MediaConfig()
        config.dtx = true
        let encoder = try OpusEncoder(config: config)
        let silence = [Int16](repeating: 0, count: Audio.frameSamples)
        let sizes = try (0..<50).map { _ in try encoder.encode(silence).count }
        #expect(sizes.suffix(10).allSatisfy { $0 <= 2 }, "\(sizes)")
    }
}
