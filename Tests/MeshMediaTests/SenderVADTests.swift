import MeshMedia
import Testing

@Suite struct SenderVADTests {
    @Test func audioLevelIsRFC6464() throws {
        let loud = AudioLevel(voice: true, samples: TestAudio.sine(hz: 440, count: 960, amplitude: 32767))
        #expect(loud.level == 3 && loud.voice)  // a full-scale sine is 3 dB below a full-scale square
        #expect(loud.bytes == [0x83])
        #expect(AudioLevel(voice: false, samples: [Int16](repeating: 0, count: 960)).level == 127)
        #expect(AudioLevel(bytes: [0x2a]) == AudioLevel(voice: false, level: 42))
        #expect(AudioLevel(bytes: []) == nil)
    }

    /// Sentences with pauses over steady background noise at about −35 dBFS, where Opus's own DTX rarely
    /// engages.
    private func noisySpeech() throws -> [Int16] {
        let pause = [Int16](repeating: 0, count: Audio.sampleRate)
        var speech: [Int16] = []
        for text in ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background."] {
            speech += try TestAudio.speech(text) + pause
        }
        let noise = TestAudio.noise(count: speech.count, amplitude: 1000)
        return zip(speech, noise).map { Int16(clamping: Int($0) + Int($1)) }
    }

    private func send(_ audio: [Int16], vad: Bool) throws -> [RTPPacket] {
        var config = MediaConfig()
        config.vad = vad
        let sender = try MediaSender(config: config, ssrc: 5)
        return try TestAudio.frames(audio).compactMap { try sender.packetize(frame: $0) }
            .map { try #require(RTPPacket(parsing: $0)) }
    }

    @Test func vadDTXSendsLessOverBackgroundNoiseAndMarksSilence() throws {
        let audio = try noisySpeech()
        let plain = try send(audio, vad: false)
        let gated = try send(audio, vad: true)
        #expect(Double(gated.count) < 0.85 * Double(plain.count), "\(gated.count) vs \(plain.count)")
        let levels = gated.compactMap { $0.extensions[AudioLevel.extensionID].flatMap(AudioLevel.init(bytes:)) }
        #expect(levels.count == gated.count)
        #expect(levels.contains { $0.voice } && levels.contains { !$0.voice })
        #expect(plain.allSatisfy { $0.extensions[AudioLevel.extensionID] == nil })
        // A pause starts with one DTX packet (the TOC byte alone); after it only the 400 ms refreshes go out.
        let isDTX = gated.map { $0.payload.count == 1 }
        #expect(isDTX.contains(true))
        #expect(zip(isDTX, isDTX.dropFirst()).allSatisfy { !($0 && $1) })
    }

    @Test func lossAfterASilentPacketIsComfortNoise() throws {
        var config = MediaConfig()
        config.playout = .fixed(ms: 40)
        config.dtx = false  // every packet carries audio: only the V bit can say the sender went silent
        let encoder = try OpusEncoder(config: config)
        let tone = TestAudio.frames(TestAudio.sine(hz: 300, count: 40 * Audio.frameSamples, amplitude: 3000))
        // Packets 0...11 are speech, 12...15 the sender's hangover (V = 0); 16...19 (with the DTX packet) are
        // lost; packet 20 starts the next talk spurt at frame 40.
        func packets(markSilence: Bool) throws -> [(frame: Int, rtp: [UInt8])] {
            try (0..<21).compactMap { index in
                guard index < 16 || index == 20 else { return nil }
                let frame = index == 20 ? 40 : index
                let level = AudioLevel(voice: !(12..<16).contains(index), level: 30)
                let packet = RTPPacket(payloadType: MediaSender.payloadType, sequence: UInt16(index),
                                       timestamp: UInt32(frame * Audio.frameSamples), ssrc: 9,
                                       payload: try encoder.encode(tone[frame % tone.count]),
                                       extensions: markSilence ? [AudioLevel.extensionID: level.bytes] : [:])
                return (frame, packet.serialize())
            }
        }
        func play(_ packets: [(frame: Int, rtp: [UInt8])]) throws -> ReceiverStats {
            let receiver = try MediaReceiver(config: config)
            var next = 0
            for tick in 0..<43 {  // until packet 20 has played
                let now = Int64(tick * Audio.frameMs)
                while next < packets.count, Int64(packets[next].frame * Audio.frameMs) <= now {
                    #expect(receiver.receive(rtp: packets[next].rtp, nowMs: now))
                    next += 1
                }
                _ = receiver.nextFrame(nowMs: now)
            }
            return receiver.stats
        }
        let marked = try play(try packets(markSilence: true))
        let unmarked = try play(try packets(markSilence: false))
        #expect(marked.packetsLost == 4 && unmarked.packetsLost == 4)
        // Without the V bit the receiver cannot tell the silence from loss and conceals it.
        #expect(marked.framesConcealed == 0 && marked.dtxPercent > 40, "\(marked)")
        #expect(unmarked.framesConcealed > 10, "\(unmarked)")
    }
}
