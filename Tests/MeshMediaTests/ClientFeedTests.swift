import MeshMedia
import MeshTestKit
import Testing

/// The client feed between `mesh-node call --play` and the node's 20 ms grid: stalls of the feeder must not
/// leave the call later for good.
@Suite struct ClientFeedTests {
    /// A feeder on its own 20 ms schedule, 5 ms after the node's ticks: frame k is made at 20·k + 5 ms and
    /// reaches the node then, or at the end of a stall it falls into (the feeder catches up in a burst), plus
    /// `jitter(k)` ms. `loud(k)` tells speech from pause. Each frame carries its number in its first sample.
    struct Run {
        var latencies: [Int: Int64] = [:]
        /// Ticks during the call that found the feed empty.
        var silentTicks = 0
        var feed = ClientFeed()

        /// Latency (tick − making time, ms) of the frames played among `frames`.
        func latencies(of frames: Range<Int>) -> [Int64] { frames.compactMap { latencies[$0] } }
    }

    static func frame(_ k: Int, loud: Bool) -> [Int16] {
        var samples = loud ? TestAudio.sine(hz: 220, count: Audio.frameSamples, amplitude: 8000) : [Int16](repeating: 0, count: Audio.frameSamples)
        samples[0] = Int16(k)
        return samples
    }

    static func run(seconds: Int, stalls: [Range<Int64>], loud: (Int) -> Bool, jitter: (Int) -> Int64 = { _ in 0 }) -> Run {
        var result = Run()
        let count = seconds * 50
        let arrivals: [(at: Int64, k: Int)] = (0..<count).map { k in
            let made = Int64(k * Audio.frameMs + 5)
            let stalledUntil = stalls.first { $0.contains(made) }?.upperBound ?? made
            return (stalledUntil + jitter(k), k)
        }.sorted { ($0.at, $0.k) < ($1.at, $1.k) }
        var next = 0
        for tick in 0..<(count + 10) {
            let now = Int64(tick * Audio.frameMs)
            while next < arrivals.count, arrivals[next].at <= now {
                result.feed.push(frame(arrivals[next].k, loud: loud(arrivals[next].k)))
                next += 1
            }
            guard let played = result.feed.pull() else {
                // Before the first frame and after the last one, nothing is expected.
                if (1...count).contains(tick) { result.silentTicks += 1 }
                continue
            }
            let k = Int(played[0])
            result.latencies[k] = now - Int64(k * Audio.frameMs + 5)
        }
        return result
    }

    /// 3 s of speech and 1 s of pause in turns; two 60 ms stalls in the first speech. The first leaves the grid
    /// two ticks without a frame and two frames of surplus; the second is absorbed by that surplus (its ticks
    /// play queued frames) and leaves it as it was. A plain queue plays everything 40 ms late from then on; the
    /// feed drops two pause frames at the next pause and is back at its floor (15 ms) for the rest of the call,
    /// without touching speech.
    @Test func twoStallsAreShedAtTheNextPause() {
        let speech = { (k: Int) in k % 200 < 150 }
        let r = Self.run(seconds: 20, stalls: [1_000..<1_060, 2_010..<2_070], loud: speech)
        #expect(Set(r.latencies(of: 0..<50)) == [15])
        #expect(r.silentTicks == 2, "the first stall's ticks had nothing to send")
        #expect(Set(r.latencies(of: 105..<150)) == [55], "the second stall played from the surplus")
        #expect(r.feed.droppedQuiet == r.silentTicks && r.feed.droppedCatchUp == 0 && r.feed.droppedOverflow == 0)
        let speechAfterThePause = (200..<1_000).filter(speech)
        #expect(speechAfterThePause.allSatisfy { r.latencies[$0] != nil }, "no speech frame is dropped")
        #expect(Set(r.latencies(of: 200..<1_000)) == [15], "back at the floor after the first pause")
    }

    /// Speech without a pause: the surplus of a 60 ms stall is caught up, one frame per second after two.
    @Test func withoutAPauseTheSurplusIsCaughtUp() {
        let r = Self.run(seconds: 12, stalls: [1_010..<1_070], loud: { _ in true })
        #expect(r.silentTicks >= 2)
        #expect(r.feed.droppedCatchUp == r.silentTicks && r.feed.droppedQuiet == 0)
        #expect(Set(r.latencies(of: 400..<600)) == [15])
    }

    /// A feeder whose frames reach the node up to 15 ms late, at random: nothing is ever surplus.
    @Test func aJitteryFeederLosesNothing() {
        var random = SplitMix64(seed: 3)
        let jitter = (0..<1_000).map { _ in Int64(random.next() % 16) }
        let r = Self.run(seconds: 20, stalls: [], loud: { $0 % 200 < 150 }, jitter: { jitter[$0] })
        #expect(r.feed.droppedQuiet + r.feed.droppedCatchUp + r.feed.droppedOverflow == 0)
        #expect(r.latencies.count == 1_000)
    }

    /// A feeder far ahead of the grid keeps at most a second queued.
    @Test func overflowDropsTheOldest() {
        var feed = ClientFeed()
        for k in 0..<80 { feed.push(Self.frame(k, loud: true)) }
        #expect(feed.count == ClientFeed.capacity && feed.droppedOverflow == 30)
        #expect(feed.pull()?[0] == 30)
    }
}
