@testable import MeshLink
import MeshTestKit
import Testing

@Suite struct ReplayWindowTests {
    private func feed(_ w: inout ReplayWindow, _ counters: [UInt64]) -> [Bool] {
        counters.map { w.accept($0) }
    }

    @Test func acceptsEachCounterOnce() {
        var w = ReplayWindow()
        #expect(feed(&w, [0, 0, 5, 3, 3, 4]) == [true, false, true, true, false, true])
    }

    @Test func refusesCountersOlderThanTheWindow() {
        var w = ReplayWindow()
        #expect(feed(&w, [10_000]) == [true])
        #expect(!w.wouldAccept(10_000 - ReplayWindow.size))
        #expect(feed(&w, [10_000 - ReplayWindow.size + 1]) == [true])
    }

    @Test func bitsAreClearedWhenTheWindowSlides() {
        var w = ReplayWindow()
        #expect(feed(&w, Array(0..<100)).allSatisfy { $0 })
        // 100 + size - 1 shares a slot with an old counter; the slide must have freed it.
        #expect(feed(&w, [100 + ReplayWindow.size, 100 + ReplayWindow.size - 1, 100 + ReplayWindow.size]) == [true, true, false])
    }

    @Test func matchesASetModelOnRandomSequences() {
        var rng = SplitMix64(seed: 99)
        for _ in 0..<20 {
            var w = ReplayWindow()
            var seen = Set<UInt64>()
            var highest: UInt64 = 0
            var mismatches = 0
            for _ in 0..<2_000 {
                let jump = rng.next() % 3 == 0 ? rng.next() % 3_000 : 0
                let back = rng.next() % 2_500
                let c = highest + jump >= back ? highest + jump - back : highest + jump
                let expected = !seen.contains(c) && (seen.isEmpty || c > highest || highest - c < ReplayWindow.size)
                if w.accept(c) != expected { mismatches += 1 }
                if expected {
                    seen.insert(c)
                    highest = max(highest, c)
                }
            }
            #expect(mismatches == 0)
        }
    }
}
