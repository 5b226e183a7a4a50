#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How well a recording matches a reference signal.
public struct AudioMatchResult: Sendable, Codable, Equatable {
    /// How much later the reference appears in the recording (negative: earlier).
    public var lagMs: Double
    /// Normalised cross-correlation (Pearson) of the aligned overlap, -1...1.
    public var correlation: Double
    /// The length of the aligned overlap.
    public var overlapMs: Double

    public init(lagMs: Double, correlation: Double, overlapMs: Double) {
        self.lagMs = lagMs
        self.correlation = correlation
        self.overlapMs = overlapMs
    }
}

/// Checks that a recording contains a reference signal (e.g. speech sent round an echo call): finds the lag,
/// then correlates the aligned overlap. Coarse-to-fine steps keep it fast even in a debug build:
/// 1. the coarse lag from an FFT cross-correlation of both signals decimated to about 4 kHz
///    (block averages, a cheap low-pass), over ±`maxLagMs`;
/// 2. the exact lag from full-rate cross-correlation within ±2 coarse samples of it;
/// 3. per 0.25 s block of the overlap, the lag of the 1.25 s around it (it and two blocks either side) within
///    ±120 ms of that one, at about 1 kHz: the delay moves during a call, slowly when adaptive playout
///    time-stretches and in steps of 60–100 ms when a stalled feeder's silence is sent (docs/media.md, "Client
///    feed"); the blocks around, not the block alone, so that unrelated audio finds no better lag by chance in the
///    wider search (each block's products are computed once per lag and shared by its neighbours' sums);
/// 4. the block's own lag within ±30 ms of that (at about 4 kHz, then at the full rate);
/// 5. the normalised correlation of the blocks, each at its lag, at the full rate.
public enum AudioMatch {
    private static let coarseRate = 4_000
    private static let refineRadius = 2
    private static let blockMs = 250
    private static let contextRate = 1_000
    private static let contextBlocks = 2
    private static let contextSlackMs = 120
    private static let blockSlackMs = 30

    public static func compare(reference: [Int16], recorded: [Int16], sampleRate: Int = Audio.sampleRate,
                               maxLagMs: Int = 2000) -> AudioMatchResult {
        let reference = centered(reference)
        let recorded = centered(recorded)
        let factor = max(1, sampleRate / coarseRate)
        let maxLag = max(0, maxLagMs) * sampleRate / 1000
        let coarse = bestCoarseLag(decimate(reference, by: factor), decimate(recorded, by: factor),
                                   maxLag: maxLag / factor) * factor
        let candidates = max(-maxLag, coarse - refineRadius * factor)...min(maxLag, coarse + refineRadius * factor)
        let lag = candidates.map { ($0, dot(reference, recorded, lag: $0)) }.max { $0.1 < $1.1 }?.0 ?? 0
        let whole = overlap(reference, recorded, lag: lag)
        let block = blockMs * sampleRate / 1000
        let slack = blockSlackMs * sampleRate / 1000
        let blocks = stride(from: whole.lowerBound, to: whole.upperBound, by: block).map { $0..<min($0 + block, whole.upperBound) }
        let locals = contextLags(reference, recorded, blocks: blocks, lag: lag, sampleRate: sampleRate)
        let segments = zip(blocks, locals).map { range, local in
            let coarse = bestLag(reference, recorded, range, (local - slack)...(local + slack), step: factor) ?? local
            return (range, bestLag(reference, recorded, range, (coarse - factor)...(coarse + factor)) ?? coarse)
        }
        let (correlation, overlap) = pearson(reference, recorded, segments)
        return AudioMatchResult(lagMs: Double(lag) * 1000 / Double(sampleRate), correlation: correlation,
                                overlapMs: Double(overlap) * 1000 / Double(sampleRate))
    }

    private static func centered(_ samples: [Int16]) -> [Double] {
        let mean = samples.reduce(0.0) { $0 + Double($1) } / Double(max(1, samples.count))
        return samples.map { Double($0) - mean }
    }

    private static func decimate(_ samples: [Double], by factor: Int) -> [Double] {
        (0..<samples.count / factor).map { block in
            samples[block * factor..<(block + 1) * factor].reduce(0, +) / Double(factor)
        }
    }

    /// The lag k in -maxLag...maxLag maximising Σ a[n]·b[n+k], by FFT.
    private static func bestCoarseLag(_ a: [Double], _ b: [Double], maxLag: Int) -> Int {
        guard !a.isEmpty, !b.isEmpty else { return 0 }
        var size = 1
        while size < max(a.count, b.count) + maxLag + 1 { size <<= 1 }
        var (aRe, aIm) = (a + [Double](repeating: 0, count: size - a.count), [Double](repeating: 0, count: size))
        var (bRe, bIm) = (b + [Double](repeating: 0, count: size - b.count), [Double](repeating: 0, count: size))
        let fft = FFT(size: size)
        fft.transform(&aRe, &aIm, inverse: false)
        fft.transform(&bRe, &bIm, inverse: false)
        // conj(A)·B, whose inverse transform is the cross-correlation (lag k at index k, -k at size - k).
        var cRe = [Double](repeating: 0, count: size)
        var cIm = [Double](repeating: 0, count: size)
        for i in 0..<size {
            cRe[i] = aRe[i] * bRe[i] + aIm[i] * bIm[i]
            cIm[i] = aRe[i] * bIm[i] - aIm[i] * bRe[i]
        }
        fft.transform(&cRe, &cIm, inverse: true)
        let lags = -min(maxLag, a.count - 1)...min(maxLag, b.count - 1)
        return lags.max { cRe[($0 + size) % size] < cRe[($1 + size) % size] } ?? 0
    }

    /// Per block, the lag within ±`contextSlackMs` of `lag` that best aligns it and the `contextBlocks` blocks
    /// either side, at about `contextRate` (`lag` itself on a tie).
    private static func contextLags(_ reference: [Double], _ recorded: [Double], blocks: [Range<Int>], lag: Int,
                                    sampleRate: Int) -> [Int] {
        let factor = max(1, sampleRate / contextRate)
        let (a, b) = (decimate(reference, by: factor), decimate(recorded, by: factor))
        let slack = contextSlackMs * sampleRate / 1000 / factor
        let lags = Array((lag / factor - slack)...(lag / factor + slack))
        // Σ a·b over each block for each lag; -∞ where the block shifted by the lag leaves the recording.
        let products = blocks.map { range in
            let range = range.lowerBound / factor..<range.upperBound / factor
            return lags.map { l in
                range.lowerBound + l >= 0 && range.upperBound + l <= b.count ? dot(a, b, range, lag: l) : -Double.infinity
            }
        }
        return blocks.indices.map { i in
            let window = products[max(0, i - contextBlocks)...min(blocks.count - 1, i + contextBlocks)]
            let sums = lags.indices.map { k in window.reduce(0.0) { $0 + $1[k] } }
            let best = sums.indices.reduce(slack) { sums[$1] > sums[$0] ? $1 : $0 }
            return sums[best] > -Double.infinity ? lags[best] * factor : lag
        }
    }

    /// The lag among `lags` (every `step`-th, those that keep `range` inside `b`) maximising Σ a[n]·b[n+lag] over
    /// `range` (every `step`-th sample); nil when none keeps it inside or `range` is empty.
    private static func bestLag(_ a: [Double], _ b: [Double], _ range: Range<Int>, _ lags: ClosedRange<Int>,
                                step: Int = 1) -> Int? {
        let low = max(lags.lowerBound, -range.lowerBound)
        let high = min(lags.upperBound, b.count - range.upperBound)
        guard low <= high, !range.isEmpty else { return nil }
        return stride(from: low, through: high, by: step).map { ($0, dot(a, b, range, lag: $0, step: step)) }.max { $0.1 < $1.1 }?.0
    }

    /// The index range of `a` that overlaps `b` shifted by `lag`.
    private static func overlap(_ a: [Double], _ b: [Double], lag: Int) -> Range<Int> {
        let start = max(0, -lag)
        let end = min(a.count, b.count - lag)
        return start..<max(start, end)
    }

    private static func dot(_ a: [Double], _ b: [Double], lag: Int) -> Double {
        dot(a, b, overlap(a, b, lag: lag), lag: lag)
    }

    /// Σ a[n]·b[n+lag] over `range`, every `step`-th sample.
    private static func dot(_ a: [Double], _ b: [Double], _ range: Range<Int>, lag: Int, step: Int = 1) -> Double {
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                var sum = 0.0
                for n in stride(from: range.lowerBound, to: range.upperBound, by: step) { sum += a[n] * b[n + lag] }
                return sum
            }
        }
    }

    /// Pearson correlation of `a` against `b`, each range of `a` paired with `b` shifted by its own lag.
    private static func pearson(_ a: [Double], _ b: [Double], _ segments: [(Range<Int>, Int)])
        -> (correlation: Double, count: Int) {
        var (sumA, sumB, sumAA, sumBB, sumAB) = (0.0, 0.0, 0.0, 0.0, 0.0)
        var total = 0
        for (range, lag) in segments {
            for n in range {
                let (x, y) = (a[n], b[n + lag])
                sumA += x
                sumB += y
                sumAA += x * x
                sumBB += y * y
                sumAB += x * y
            }
            total += range.count
        }
        guard total >= 2 else { return (0, total) }
        let count = Double(total)
        let covariance = sumAB - sumA * sumB / count
        let variance = (sumAA - sumA * sumA / count) * (sumBB - sumB * sumB / count)
        return (variance > 0 ? covariance / variance.squareRoot() : 0, total)
    }
}

/// Radix-2 complex FFT of one power-of-two size, in place.
private struct FFT {
    private let size: Int
    private let cosines: [Double]
    private let sines: [Double]

    init(size: Int) {
        precondition(size > 0 && size & (size - 1) == 0, "FFT size must be a power of two")
        self.size = size
        let half = (0..<size / 2).map { -2 * Double.pi * Double($0) / Double(size) }
        cosines = half.map { cos($0) }
        sines = half.map { sin($0) }
    }

    /// The forward transform, or the unscaled inverse (conjugate twiddles).
    func transform(_ real: inout [Double], _ imaginary: inout [Double], inverse: Bool) {
        precondition(real.count == size && imaginary.count == size)
        let sign = inverse ? -1.0 : 1.0
        real.withUnsafeMutableBufferPointer { re in
            imaginary.withUnsafeMutableBufferPointer { im in
                var j = 0
                for i in 1..<size {
                    var bit = size >> 1
                    while j & bit != 0 {
                        j ^= bit
                        bit >>= 1
                    }
                    j |= bit
                    if i < j {
                        re.swapAt(i, j)
                        im.swapAt(i, j)
                    }
                }
                var length = 2
                while length <= size {
                    let half = length / 2
                    let step = size / length
                    for start in stride(from: 0, to: size, by: length) {
                        for k in 0..<half {
                            let wRe = cosines[k * step]
                            let wIm = sign * sines[k * step]
                            let (p, q) = (start + k, start + k + half)
                            let tRe = re[q] * wRe - im[q] * wIm
                            let tIm = re[q] * wIm + im[q] * wRe
                            re[q] = re[p] - tRe
                            im[q] = im[p] - tIm
                            re[p] += tRe
                            im[p] += tIm
                        }
                    }
                    length <<= 1
                }
            }
        }
    }
}
