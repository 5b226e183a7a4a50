@testable import MeshMedia
import MeshTestKit
import Testing

/// The extra delay the adaptive buffer holds for loss recovery (docs/media.md, "Target"): it waits for the
/// nearest packet that rebuilds the deepest loss that is common enough, so each packet of waiting pays for itself.
/// Packets arrive every 20 ms with a constant network delay, so the jitter alone asks for the same target with
/// or without loss; each packet that arrives carries copies at `distance`, as `MediaReceiver` tells the buffer.
@Suite struct PlayoutRecoveryTests {
    /// What the buffer held for recovery after a packet: the packets it waits, and its target above a loss-free
    /// buffer's fed the same arrivals.
    struct Held: Hashable {
        let packets: Int64
        let extraMs: Double

        init(packets: Int64) {
            self.packets = packets
            extraMs = Double(packets * Int64(Audio.frameMs))
        }

        init(_ buffer: PlayoutBuffer, jitterOnlyMs: Double) {
            packets = buffer.recoveryPackets
            extraMs = buffer.targetMs(nowMs: 0) - jitterOnlyMs
        }
    }

    /// Plays packets 0..<count into an adaptive buffer with FEC, losing those `lost` says; what it held after
    /// each packet from the 500th on (the loss averages have settled by then).
    static func play(count: Int, distance: Int = 2, lost: (Int) -> Bool) -> [Held] {
        var lossy = PlayoutBuffer(config: MediaConfig())
        var clean = PlayoutBuffer(config: MediaConfig())
        var held: [Held] = []
        for index in 0..<count {
            let arrivalMs = Int64(index * Audio.frameMs + 30)
            let sequence = UInt16(truncatingIfNeeded: index)
            let timestamp = UInt32(index * Audio.frameSamples)
            if !lost(index) {
                lossy.insert(sequence: sequence, timestamp: timestamp, ssrc: 1, payload: [0x78, 1],
                             samples: Audio.frameSamples, arrivalMs: arrivalMs)
                lossy.noteRedundancy(distance: distance)
            }
            clean.insert(sequence: sequence, timestamp: timestamp, ssrc: 1, payload: [0x78, 1],
                         samples: Audio.frameSamples, arrivalMs: arrivalMs)
            if index >= 500 { held.append(Held(lossy, jitterOnlyMs: clean.targetMs(nowMs: 0))) }
        }
        return held
    }

    /// About 8 % of packets lost, each alone (never two in a row), with copies two back on: FEC's next packet
    /// rebuilds every one of them, so the buffer holds exactly one packet above the jitter's target, not the
    /// three it would take to wait for the copies.
    @Test(arguments: UInt64(1)...5)
    func singleLossesEarnOnePacketNotTheCopies(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let losses = (0..<3000).map { _ in Int.random(in: 0..<100, using: &random) < 8 }
        let lost: (Int) -> Bool = { losses[$0] && ($0 == 0 || !losses[$0 - 1]) }
        #expect((0..<3000).filter(lost).count > 180, "seed \(seed): the loss is about 7 %")
        #expect(Set(Self.play(count: 3000, lost: lost)) == [Held(packets: 1)], "seed \(seed)")
    }

    /// Runs of `burst` lost packets every 25 (4–16 % loss), copies at `distance` (0: none): the buffer waits for
    /// the nearest packet that rebuilds a whole run (FEC: the next; a copy: `distance` later; the copy's FEC:
    /// one more), or for the farthest that rebuilds anything when none rebuilds all.
    @Test(arguments: [
        (1, 0, 1), (3, 0, 1),  // FEC alone: the next packet is all there is
        (1, 2, 1),  // single losses: FEC, not the copies
        (2, 2, 2),  // pairs: the copy two back rebuilds the first
        (3, 2, 3),  // three: the copy's own FEC rebuilds the first
        (4, 2, 3),  // four: no packet rebuilds the first; wait for the farthest that rebuilds any
        (2, 3, 3),  // pairs with copies three back: the nearest packet that rebuilds the first is the copy
    ] as [(Int, Int, Int64)])
    func burstsEarnTheWaitThatRebuildsThem(burst: Int, distance: Int, packets: Int64) {
        let held = Self.play(count: 1500, distance: distance) { $0 >= 25 && $0 % 25 < burst }
        #expect(Set(held) == [Held(packets: packets)])
    }

    /// When the bursts stop and only single losses remain, the wait for the copies goes with them.
    @Test func theWaitFallsBackWhenBurstsEnd() {
        let held = Self.play(count: 4000) { $0 < 1000 ? $0 % 25 < 3 : $0 % 12 == 0 }
        #expect(held[999 - 500] == Held(packets: 3) && held.last == Held(packets: 1))
    }
}
