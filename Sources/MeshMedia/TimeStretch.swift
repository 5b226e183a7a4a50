/// Time-stretching of decoded speech by one pitch period (WSOLA-style, as NetEq's accelerate and
/// preemptive expand): the period is found by normalised autocorrelation, and the splice is a linear
/// cross-fade between two segments one period apart, so the waveform stays continuous. Pure.
enum TimeStretch {
    /// Pitch periods searched: 2.5...10 ms (400...100 Hz), so a 20 ms frame holds two periods.
    static let minPeriod = 120
    static let maxPeriod = 480
    /// The search runs at 12 kHz (every 4th sample) and is refined at 48 kHz.
    private static let decimation = 4
    /// NetEq's threshold: stretch speech only where two consecutive periods correlate this well.
    static let correlationThreshold = 0.9
    /// Below this mean power (about −45 dBFS) a segment is quiet enough to stretch anywhere.
    static let quietPower = 200.0 * 200.0

    /// `pcm` shortened by one pitch period, or nil when the signal is neither periodic nor quiet there.
    static func accelerate(_ pcm: [Int16]) -> [Int16]? {
        guard let period = period(in: pcm) else { return nil }
        let spliced = crossFade(from: pcm[0..<period], to: pcm[period..<2 * period])
        return spliced + pcm[(2 * period)...]
    }

    /// `pcm` lengthened by one pitch period, or nil when the signal is neither periodic nor quiet there.
    static func decelerate(_ pcm: [Int16]) -> [Int16]? {
        guard let period = period(in: pcm) else { return nil }
        let spliced = crossFade(from: pcm[period..<2 * period], to: pcm[0..<period])
        return Array(pcm[0..<period]) + spliced + pcm[period...]
    }

    /// The lag in `minPeriod...maxPeriod` where `pcm[0..<lag]` best matches `pcm[lag..<2·lag]`, when the
    /// match is at least `correlationThreshold` or the segment is quiet.
    static func period(in pcm: [Int16]) -> Int? {
        guard pcm.count >= 2 * maxPeriod else { return nil }
        let x = pcm.map(Double.init)
        let power = x[0..<(2 * maxPeriod)].reduce(0) { $0 + $1 * $1 } / Double(2 * maxPeriod)
        var best = (lag: minPeriod, score: -Double.infinity)
        for lag in stride(from: minPeriod, through: maxPeriod, by: decimation) {
            let score = correlation(x, lag: lag, step: decimation)
            if score > best.score { best = (lag, score) }
        }
        for lag in max(minPeriod, best.lag - decimation)...min(maxPeriod, best.lag + decimation) {
            let score = correlation(x, lag: lag, step: 1)
            if score > best.score { best = (lag, score) }
        }
        if power < quietPower { return best.lag }
        return best.score >= correlationThreshold ? best.lag : nil
    }

    /// Normalised correlation of `x[0..<lag]` and `x[lag..<2·lag]`, every `step`-th sample.
    private static func correlation(_ x: [Double], lag: Int, step: Int) -> Double {
        var cross = 0.0, a2 = 0.0, b2 = 0.0
        var i = 0
        while i < lag {
            let a = x[i], b = x[i + lag]
            cross += a * b
            a2 += a * a
            b2 += b * b
            i += step
        }
        let norm = (a2 * b2).squareRoot()
        return norm > 0 ? cross / norm : 0
    }

    /// A linear cross-fade: `from` fades out while `to` fades in (equal lengths).
    static func crossFade(from: ArraySlice<Int16>, to: ArraySlice<Int16>) -> [Int16] {
        let count = from.count
        return (0..<count).map { i in
            let w = Double(i + 1) / Double(count + 1)
            let a = Double(from[from.startIndex + i]), b = Double(to[to.startIndex + i])
            return Int16(clamping: Int((a * (1 - w) + b * w).rounded()))
        }
    }
}
