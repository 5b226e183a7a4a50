@testable import MeshMedia
import Foundation
import MeshTestKit
import Testing

/// Replays arrival times through a `MediaReceiver` on a 20 ms tick grid. Packets carry 50 pre-encoded frames
/// of a voiced sound, reused in a cycle, so long replays cost only decoding.
struct Replay {
    static let payloads: [[UInt8]] = {
        var config = MediaConfig()
        config.dtx = false
        let encoder = try! OpusEncoder(config: config)
        let low = TestAudio.sine(hz: 150, count: 50 * Audio.frameSamples, amplitude: 6000)
        let high = TestAudio.sine(hz: 450, count: 50 * Audio.frameSamples, amplitude: 2000)
        let voice = zip(low, high).map { $0 &+ $1 }
        return TestAudio.frames(voice).map { try! encoder.encode($0) }
    }()

    var config: MediaConfig = {
        var config = MediaConfig()
        config.dtx = false
        return config
    }()

    /// Packet k has timestamp 960·k and arrives at `arrivals[k]` (nil: lost). Returns the receiver, the frames
    /// played and the latest playout delay after every tick.
    func run(_ arrivals: [Int64?], ticks: Int, duplicate: (Int) -> Bool = { _ in false })
        -> (receiver: MediaReceiver, frames: [[Int16]], delays: [Double]) {
        let receiver = try! MediaReceiver(config: config)
        let order = arrivals.indices.compactMap { k in arrivals[k].map { (k, $0) } }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
        var next = 0
        var frames: [[Int16]] = []
        var delays: [Double] = []
        for tick in 0..<ticks {
            let now = Int64(tick * Audio.frameMs)
            while next < order.count, order[next].1 <= now {
                let (k, at) = order[next]
                let packet = RTPPacket(payloadType: MediaSender.payloadType, sequence: UInt16(truncatingIfNeeded: k),
                                       timestamp: UInt32(truncatingIfNeeded: k * Audio.frameSamples), ssrc: 9,
                                       payload: Self.payloads[k % Self.payloads.count]).serialize()
                _ = receiver.receive(rtp: packet, nowMs: at)
                if duplicate(k) { _ = receiver.receive(rtp: packet, nowMs: at) }
                next += 1
            }
            frames.append(receiver.nextFrame(nowMs: now))
            delays.append(receiver.currentPlayoutDelayMs ?? 0)
        }
        return (receiver, frames, delays)
    }

    static func mean(_ values: ArraySlice<Double>) -> Double { values.reduce(0, +) / Double(max(1, values.count)) }
}

@Suite struct AdaptivePlayoutTests {
    @Test func delayGrowsOverASpikeWithoutLateLossThenShrinksAfterCalm() throws {
        // 10 ms of network delay; packets sent between 4 and 4.5 s are held 300 ms, then drain (FIFO).
        var arrivals: [Int64?] = (0..<750).map { Int64($0 * 20 + 10) }
        for k in 200..<250 { arrivals[k] = Int64(k * 20 + 310) }
        for k in 250..<265 { arrivals[k] = max(arrivals[k]!, arrivals[249]!) }
        let (receiver, _, delays) = Replay().run(arrivals, ticks: 760)
        let stats = receiver.stats
        #expect(stats.packetsLate == 0, "\(stats)")
        #expect(Replay.mean(delays[150..<200]) < 40)
        #expect(delays[250...300].max()! > 200, "the delay grows as the queue behind the spike drains")
        #expect(Replay.mean(delays[650..<750]) < 40, "and shrinks after calm: \(delays[600...].map(Int.init))")
        #expect(stats.decisions.accelerate > 10)
        #expect(stats.delaySpikes == 1)
    }

    @Test func targetGrowsWithJitterAndFollowsRecurringSpikes() throws {
        var random = SplitMix64(seed: 3)
        let calm: [Int64?] = (0..<250).map { Int64($0 * 20 + 5) }
        let jittery: [Int64?] = (250..<500).map { Int64($0 * 20 + 5) + Int64.random(in: 0...60, using: &random) }
        let calmRun = Replay().run(calm, ticks: 250).receiver.stats
        let jitteryRun = Replay().run(calm + jittery, ticks: 500).receiver.stats
        #expect(calmRun.targetDelayMs <= 30, "\(calmRun)")
        #expect(jitteryRun.targetDelayMs >= 60, "\(jitteryRun)")
        #expect(jitteryRun.lateLossPercent < 2, "\(jitteryRun)")

        // Spikes of 250 ms every 5 s are recurring: the target covers them.
        var spiky: [Int64?] = (0..<1000).map { Int64($0 * 20 + 5) }
        for start in [250, 500, 750] { for k in start..<start + 10 { spiky[k] = Int64(k * 20 + 255) } }
        let spikyRun = Replay().run(spiky, ticks: 800).receiver.stats
        #expect(spikyRun.delaySpikes == 3)
        #expect(spikyRun.targetDelayMs >= 250, "\(spikyRun)")
    }

    @Test func driftIsEstimatedAndCompensated() throws {
        // The sender's clock runs 1000 ppm fast for 100 s: without compensation the buffer would grow 100 ms.
        let arrivals: [Int64?] = (0..<5000).map { k in Int64((Double(k * 20) / 1.001).rounded()) + 20 }
        let (receiver, _, delays) = Replay().run(arrivals, ticks: 4990)
        let stats = receiver.stats
        let ppm = try #require(stats.driftPpm)
        #expect(abs(ppm - 1000) < 100, "\(stats)")
        // Compare whole 20 s windows from when the skew is known (30 s): at 1000 ppm the arrival phase against
        // the 20 ms tick turns once every 20 s, which swings the playout delay of single packets by up to 20 ms.
        // (Uncompensated, the sender gains 50 ms between these windows, which only the level band would hold.)
        let known = Replay.mean(delays[1500..<2500])
        let last = Replay.mean(delays[3990..<4990])
        #expect(abs(last - known) < 20, "\(known) → \(last)")
        #expect(stats.packetsLate == 0 && stats.framesConcealed <= 1, "\(stats)")
    }

    @Test func comfortNoiseFillsDTXAndIsAudible() throws {
        var config = MediaConfig()
        config.dtx = true
        let sender = try MediaSender(config: config, ssrc: 5)
        let receiver = try MediaReceiver(config: config)
        // 1 s of voice, 4 s of quiet room noise (about −50 dBFS), 1 s of voice.
        let voice = TestAudio.sine(hz: 220, count: Audio.sampleRate)
        let room = TestAudio.noise(count: 4 * Audio.sampleRate, amplitude: 150, seed: 4)
        var played: [Int16] = []
        for (index, frame) in TestAudio.frames(voice + room + voice).enumerated() {
            let now = Int64(index * Audio.frameMs)
            if let packet = try sender.packetize(frame: frame) { _ = receiver.receive(rtp: packet, nowMs: now + 10) }
            played += receiver.nextFrame(nowMs: now)
        }
        let stats = receiver.stats
        #expect(sender.framesSuppressed > 60, "Opus enters DTX after a while; then 18 of 20 frames are not sent")
        #expect(stats.packetsLost == 0 && stats.packetsLate == 0 && stats.framesConcealed == 0, "\(stats)")
        #expect(stats.dtxPercent > 15, "\(stats)")
        let quiet = played[(2 * Audio.sampleRate)..<(4 * Audio.sampleRate)]
        let rms = TestAudio.energy(quiet).squareRoot()
        #expect(rms > 10 && rms < 1000, "comfort noise is audible, not silence: rms \(rms)")
        #expect(TestAudio.energy(played[(5 * Audio.sampleRate + 4800)...]) > 1_000_000, "the voice comes back")
    }

    @Test func profileSwitchesAtFrameBoundariesWithoutDiscontinuity() throws {
        var config = MediaConfig()
        config.dtx = false
        let sender = try MediaSender(config: config, ssrc: 5)
        let receiver = try MediaReceiver(config: config)
        let input = TestAudio.sine(hz: 330, count: 4 * Audio.sampleRate)
        var played: [Int16] = []
        let switches: [Int: QualityProfile] = [50: .catastrophic, 101: .studio, 150: .degraded]
        for (index, frame) in TestAudio.frames(input).enumerated() {
            if let profile = switches[index] { try sender.apply(profile) }
            let now = Int64(index * Audio.frameMs)
            if let packet = try sender.packetize(frame: frame) { _ = receiver.receive(rtp: packet, nowMs: now) }
            played += receiver.nextFrame(nowMs: now)
        }
        let stats = receiver.stats
        #expect(sender.profile == .degraded)
        // Going to 40 ms packets delays the audio by 20 ms: the buffer conceals once while it waits for the
        // first one.
        #expect(stats.framesConcealed <= 1 && stats.malformed == 0 && stats.packetsLate == 0, "\(stats)")
        // Every 10 ms after the start carries the tone, and no step between samples is a click: a 330 Hz tone
        // of amplitude 8000 moves at most 346 per sample; coding noise adds a little.
        let body = played[(3 * Audio.frameSamples)...]
        #expect(stride(from: body.startIndex, to: body.endIndex - 480, by: 480).allSatisfy {
            TestAudio.energy(body[$0..<($0 + 480)]) > 1_000_000
        })
        let steps = zip(body, body.dropFirst()).map { abs(Int($1) - Int($0)) }
        #expect(steps.max()! < 1200, "largest step \(steps.max()!)")
    }

    @Test func timeStretchRemovesAndInsertsOnePitchPeriodSmoothly() throws {
        let voiced = (0..<960).map { Int16(8000 * sin(2 * .pi * 200 * Double($0) / 48_000)) }  // period 240
        let shorter = try #require(TimeStretch.accelerate(voiced))
        let longer = try #require(TimeStretch.decelerate(voiced))
        #expect(shorter.count == 720 && longer.count == 1200)
        for pcm in [shorter, longer] {
            #expect(zip(pcm, pcm.dropFirst()).allSatisfy { abs(Int($1) - Int($0)) < 300 })
        }
        let loudNoise = TestAudio.noise(count: 960, amplitude: 8000, seed: 9)
        #expect(TimeStretch.accelerate(loudNoise) == nil, "noise is not stretched")
    }
}
