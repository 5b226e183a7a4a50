@testable import MeshMedia
import MeshTestKit
import Testing

/// `currentPlayoutDelayMs` (`node-ctl calls`) is the delay the listener hears: that of the latest speech.
@Suite struct PlayoutDelayReportTests {
    /// Voice and quiet room noise in turns over a lossy, jittery path (10 % loss, 40–100 ms delay), Opus DTX on.
    /// While comfort noise plays, the refresh packets that come every 400 ms wait out the comfort noise before
    /// them; their wait (it was reported: 456 ms here, 420–456 ms in calls) delays nothing audible, so the
    /// figure stays the delay of the last speech.
    @Test func comfortNoiseDoesNotInflateTheCurrentDelay() throws {
        var config = MediaConfig()
        config.dtx = true
        let sender = try MediaSender(config: config, ssrc: 5)
        let receiver = try MediaReceiver(config: config)
        var random = SplitMix64(seed: 7)
        let voice = TestAudio.sine(hz: 220, count: 2 * Audio.sampleRate)
        let room = TestAudio.noise(count: 3 * Audio.sampleRate, amplitude: 150, seed: 4)
        var inFlight: [(arrivalMs: Int64, packet: [UInt8])] = []
        var largestOutsideComfortNoise = 0.0
        var largestInComfortNoise = 0.0
        var comfortNoiseTicks = 0
        for (index, frame) in TestAudio.frames(voice + room + voice + room + voice).enumerated() {
            let now = Int64(index * Audio.frameMs)
            if let packet = try sender.packetize(frame: frame, report: receiver.report), random.next() % 100 >= 10 {
                inFlight.append((now + 40 + Int64(random.next() % 60), packet))
                inFlight.sort { $0.arrivalMs < $1.arrivalMs }
            }
            while let first = inFlight.first, first.arrivalMs <= now {
                _ = receiver.receive(rtp: first.packet, nowMs: first.arrivalMs)
                inFlight.removeFirst()
            }
            let before = receiver.stats.decisions.comfortNoise
            _ = receiver.nextFrame(nowMs: now)
            let delay = receiver.currentPlayoutDelayMs ?? 0
            if receiver.stats.decisions.comfortNoise > before {
                comfortNoiseTicks += 1
                largestInComfortNoise = max(largestInComfortNoise, delay)
                #expect(delay <= 150, "tick \(index): \(delay) ms reported while comfort noise plays")
            } else {
                largestOutsideComfortNoise = max(largestOutsideComfortNoise, delay)
            }
        }
        #expect(comfortNoiseTicks > 50, "the scenario has pauses in DTX")
        #expect(largestInComfortNoise <= largestOutsideComfortNoise)
    }
}
