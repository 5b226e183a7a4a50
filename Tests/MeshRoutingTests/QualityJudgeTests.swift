import MeshIdentity
@testable import MeshRouting
import MeshTestKit
import Testing

/// The quality judge (docs/calls.md, "Quality"): the thresholds, the hysteresis, and the loss meter relays use.
struct QualityJudgeTests {
    private static func sample(_ loss: Double, _ rtt: Double = 20) -> QualitySample { QualitySample(lossPercent: loss, rttMs: rtt) }

    @Test func criticalDowngradesAtOnceDegradedAfterThreeReports() {
        var judge = QualityJudge(ceiling: .normal)
        let held = judge.sample(Self.sample(4.9), now: 0)
        #expect(!held, "between the thresholds: held")
        let critical = judge.sample(Self.sample(15), now: 1_000)
        #expect(critical)
        #expect(judge.tier == .catastrophic)

        var slow = QualityJudge(ceiling: .normal)
        _ = slow.sample(Self.sample(6), now: 0)
        _ = slow.sample(Self.sample(6), now: 1_000)
        #expect(slow.tier == .normal, "two degraded reports are not enough")
        let third = slow.sample(Self.sample(1, 120), now: 2_000)
        #expect(third, "RTT counts as loss does")
        #expect(slow.tier == .degraded)
        var broken = QualityJudge(ceiling: .normal)
        for (i, loss) in [6.0, 6, 3, 6].enumerated() { _ = broken.sample(Self.sample(loss), now: Int64(i) * 1_000) }
        #expect(broken.tier == .normal, "the reports must come in a row")
        var rtt = QualityJudge(ceiling: .normal)
        _ = rtt.sample(Self.sample(0, 250), now: 0)
        #expect(rtt.tier == .catastrophic)
    }

    /// Over a measured window the thresholds allow for sampling noise: 20 of 100 packets lost is not yet critical,
    /// 23 is; 7 % over 100 packets is not degraded, 8 % is.
    @Test func downgradeThresholdsAllowForSamplingNoise() {
        var judge = QualityJudge(ceiling: .normal)
        _ = judge.sample(QualitySample(lossPercent: 20, packets: 100, rttMs: 10), now: 0)
        #expect(judge.tier == .normal)
        _ = judge.sample(QualitySample(lossPercent: 23, packets: 100, rttMs: 10), now: 250)
        #expect(judge.tier == .catastrophic)
        #expect(abs(QualityJudge.bar(5, 100, errors: 1) - 7.18) < 0.01 && abs(QualityJudge.bar(15, 100, errors: 2) - 22.14) < 0.01)
        #expect(QualityJudge.bar(15, nil, errors: 2) == 15)
    }

    @Test func upgradesNeedASustainedGoodPeriodAndStopAtTheCeiling() {
        var judge = QualityJudge(ceiling: .good)
        _ = judge.sample(Self.sample(20), now: 0)
        var now: Int64 = 0
        func run(_ seconds: Int, _ s: QualitySample) {
            for _ in 0..<seconds {
                now += 1_000
                _ = judge.sample(s, now: now)
            }
        }
        run(9, Self.sample(0.2))
        #expect(judge.tier == .catastrophic, "9 s are not enough")
        run(2, Self.sample(0.2))
        #expect(judge.tier == .normal, "below critical and good for 10 s: normal (both steps)")
        #expect(judge.why.contains("normal"))
        run(15, Self.sample(0.2))
        run(1, QualitySample(lossPercent: nil, rttMs: nil))
        run(15, Self.sample(0.2))
        #expect(judge.tier == .good, "excellent for 30 s (a second without figures does not break it)")
        run(120, Self.sample(0))
        #expect(judge.tier == .good, "never above the ceiling")

        var again = QualityJudge(ceiling: .normal)
        _ = again.sample(Self.sample(8), now: 0)
        for i in 1...3 { _ = again.sample(Self.sample(8), now: Int64(i) * 1_000) }
        #expect(again.tier == .degraded)
        for i in 4...30 { _ = again.sample(Self.sample(i % 3 == 0 ? 3 : 0), now: Int64(i) * 1_000) }
        #expect(again.tier == .degraded, "a sample between the thresholds every 3 s breaks every good period")
    }

    /// Random loss sitting at a threshold, 50 packets a second through the meter and the judge: the tier moves down
    /// and stays there, no flapping (seeded, so the same every run; 10 seeds × 10 minutes per threshold).
    @Test func lossSittingAtAThresholdDoesNotFlap() {
        for threshold in [QualityJudge.degraded.lossPercent, QualityJudge.critical.lossPercent] {
            for seed in UInt64(1)...10 {
                var rng = SplitMix64(seed: seed)
                var judge = QualityJudge(ceiling: .normal)
                var meter = LossMeter()
                var sequence: UInt16 = 0
                var (changes, ups) = (0, 0)
                for quarter in 0..<2_400 {
                    for _ in 0..<(quarter % 2 == 0 ? 12 : 13) {
                        sequence &+= 1
                        if Double(rng.next() % 10_000) / 100 >= threshold { meter.note(sequence: sequence) }
                    }
                    let before = judge.tier
                    if judge.sample(QualitySample(meter.take(), rttMs: 20, jitterMs: nil), now: Int64(quarter) * QualityJudge.sampleMs) {
                        changes += 1
                        if judge.tier > before { ups += 1 }
                    }
                }
                // Down once (twice at the critical threshold: degraded, then catastrophic) and never back.
                #expect(changes <= 2 && ups == 0, "threshold \(threshold) %, seed \(seed): \(changes) changes, \(ups) up")
            }
        }
    }

    /// When loss begins, the last second alone passes the critical bar before the two seconds do: 40 % loss from
    /// one instant on a 50 packets/s stream is judged critical sooner (each seed against the same stream judged on
    /// the two seconds only), while 10 % loss (degraded) never reaches catastrophic through it in a minute.
    @Test func theLastSecondStepsDownSoonerWithoutFalseAlarms() {
        func stepDown(seed: UInt64, recent: Bool) -> Int64? {
            var (rng, meter, judge) = (SplitMix64(seed: seed), LossMeter(), QualityJudge(ceiling: .normal))
            var sequence: UInt16 = 0
            for quarter in 0..<40 {
                for _ in 0..<(quarter % 2 == 0 ? 12 : 13) {
                    sequence &+= 1
                    if quarter < 16 || rng.next() % 100 >= 40 { meter.note(sequence: sequence) }
                }
                var sample = QualitySample(meter.take(), rttMs: 20, jitterMs: nil)
                if !recent { (sample.recentLossPercent, sample.recentPackets) = (nil, nil) }
                _ = judge.sample(sample, now: Int64(quarter) * QualityJudge.sampleMs)
                if judge.tier == .catastrophic { return Int64(quarter - 15) * QualityJudge.sampleMs }
            }
            return nil
        }
        let seeds = UInt64(1)...20
        let (quick, slow) = (seeds.compactMap { stepDown(seed: $0, recent: true) }, seeds.compactMap { stepDown(seed: $0, recent: false) })
        #expect(quick.count == 20 && slow.count == 20)
        #expect(quick.reduce(0, +) * 10 <= slow.reduce(0, +) * 8, "ms after the loss began: \(quick) against \(slow)")
        #expect(zip(quick, slow).allSatisfy { $0 <= $1 })

        for seed in seeds {
            var (rng, meter, judge) = (SplitMix64(seed: seed), LossMeter(), QualityJudge(ceiling: .normal))
            var sequence: UInt16 = 0
            for quarter in 0..<240 {
                for _ in 0..<(quarter % 2 == 0 ? 12 : 13) {
                    sequence &+= 1
                    if rng.next() % 100 >= 10 { meter.note(sequence: sequence) }
                }
                _ = judge.sample(QualitySample(meter.take(), rttMs: 20, jitterMs: nil), now: Int64(quarter) * QualityJudge.sampleMs)
                #expect(judge.tier != .catastrophic, "seed \(seed), \(quarter / 4) s: \(judge.why)")
                if judge.tier == .catastrophic { break }
            }
        }
    }

    /// RFC 3550 jitter from RTP timestamps and arrival times: none for a steady stream, about the mean deviation for
    /// one whose packets arrive alternately 10 ms early and late.
    @Test func theLossMeterMeasuresJitter() {
        var steady = LossMeter()
        var wobbly = LossMeter()
        for i in 0..<200 {
            let timestamp = UInt32.max &- 5_000 &+ UInt32(i * 960)
            steady.note(sequence: UInt16(i), timestamp: timestamp, arrivalMs: Int64(i * 20))
            wobbly.note(sequence: UInt16(i), timestamp: timestamp, arrivalMs: Int64(i * 20 + (i % 2 == 0 ? 10 : -10)))
        }
        #expect(steady.take()?.jitterMs == 0, "across the timestamp wrap too")
        let jitter = wobbly.take()?.jitterMs ?? 0
        #expect(abs(jitter - 20) < 1, "\(jitter) ms")
    }

    @Test func theLossMeterCountsGapsAcrossTheWrap() {
        var meter = LossMeter()
        #expect(meter.take() == nil, "nothing due")
        var sequence: UInt16 = 65_500
        for i in 0..<100 {
            if i % 10 != 3 { meter.note(sequence: sequence) }
            sequence &+= 1
        }
        meter.note(sequence: sequence &- 50)
        let loss = meter.take()
        #expect(loss.map { abs($0.percent - 9) < 1.1 && $0.due == 100 } == true, "\(loss?.percent ?? -1) %: 10 of 100 lost, one late packet counted received")
        meter.add(expected: 100, received: 100)
        let both = meter.take()
        #expect(both.map { abs($0.percent - 4.5) < 0.6 && $0.due == 200 } == true, "\(both?.percent ?? -1) %: over this window and the ones before")
        for _ in 0..<LossMeter.windows - 2 { meter.add(expected: 100, received: 100) ; _ = meter.take() }
        meter.add(expected: 100, received: 100)
        #expect(meter.take()?.percent == 0, "the lossy window is two seconds behind")
    }

    @Test func verdictsRoundTripAndTheirSignerIsTheRelay() {
        var rng = SplitMix64(seed: 9)
        let relay = rng.privateKey()
        let verdict = QualityVerdict.sign(call: 42, tier: .degraded, sample: QualitySample(lossPercent: 7.25, rttMs: 61.6, jitterMs: 3.14),
                                          counter: 1_000, key: relay)
        #expect(QualityVerdict(parsing: verdict.serialize()) == verdict)
        #expect(verdict.signer == relay.address)
        #expect(verdict.figures == "loss 7.3 %, rtt 62 ms, jitter 3.1 ms")
        var raised = verdict.serialize()
        raised[8] = UInt8(QualityTier.studio.rawValue)
        #expect(QualityVerdict(parsing: raised)?.signer != relay.address, "the tier is signed")
        #expect(QualityVerdict(parsing: verdict.serialize() + [0]) == nil)
        #expect(QualityTier(bitrate: 24_000) == .normal && QualityTier(bitrate: 64_000) == .studio && QualityTier(bitrate: 6_000) == .catastrophic)
    }
}
