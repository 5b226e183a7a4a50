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
/// then correlates the aligned overlap. Four steps keep it fast even in a debug build:
/// 1. the coarse lag from an FFT cross-correlation of both signals decimated to about 4 kHz
///    (block averages, a cheap low-pass), over ±`maxLagMs`;
/// 2. the exact lag from full-rate cross-correlation within ±2 coarse samples of it;
/// 3. per 0.25 s block of the overlap, the block's own lag within ±30 ms of that one (the same two steps), since
///    adaptive playout time-stretches and so moves the delay during a call;
/// 4. the normalised correlation of the blocks, each at its lag, at the full rate.
public enum AudioMatch {
    private static let coarseRate = 4_000
    private static let refineRadius = 2
    private static let blockMs = 250
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
        let segments = stride(from: whole.lowerBound, to: whole.upperBound, by: block).map { start in
            let range = start..<min(start + block, whole.upperBound)
            let lags = max(-range.lowerBound, lag - slack)...min(recorded.count - range.upperBound, lag + slack)
            let coarse = stride(from: lags.lowerBound, through: lags.upperBound, by: factor)
                .map { ($0, dot(reference, recorded, range, lag: $0, step: factor)) }.max { $0.1 < $1.1 }?.0 ?? lag
            let fine = max(lags.lowerBound, coarse - factor)...min(lags.upperBound, coarse + factor)
            return (range, fine.map { ($0, dot(reference, recorded, range, lag: $0)) }.max { $0.1 < $1.1 }?.0 ?? lag)
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
