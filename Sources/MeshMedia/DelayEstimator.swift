/// The adaptive playout target, NetEq-style: each packet's relative arrival delay (its transit time minus the
/// smallest transit of the last two seconds) goes into a histogram whose old entries fade (forgetting
/// factor); the target is a quantile of it plus one packet. Delay spikes (a handover) are kept out of the
/// histogram unless they recur, as NetEq's peak detector does. Pure: arrival times come in.
struct DelayEstimator {
    /// Histogram resolution.
    static let bucketMs = 2.0
    /// NetEq's forgetting factor per packet (a memory of about 60 packets, 1.2 s at 20 ms); the first packets
    /// are averaged equally until the factor reaches it.
    static let forgetFactor = 0.983
    /// The window for the smallest transit time (NetEq: 2 s).
    static let windowMs: Int64 = 2000
    /// A relative delay above max(2 × quantile, quantile + 100 ms) is a spike (NetEq's peak detector).
    static let spikeHeightMs = 100.0
    /// Spike packets less than 0.5 s apart belong to one spike.
    static let spikeGapMs: Int64 = 500
    /// Spikes that start within 10 s of the previous one are recurring: the target then covers them for 20 s.
    static let spikePeriodMs: Int64 = 10_000
    static let spikeHoldMs: Int64 = 20_000
    /// Packets seen before spike detection starts (the quantile must mean something first).
    static let spikeWarmup = 25

    let quantile: Double
    let ceilingMs: Double
    private var histogram: [Double]
    private var packets = 0
    /// (arrival, transit) of the last `windowMs`, oldest first.
    private var recent: [(arrivalMs: Int64, transitMs: Double)] = []
    /// The start of the latest spike, and its latest packet.
    private var spikeStartMs: Int64?
    private var spikeLastMs: Int64?
    private var recurringUntilMs: Int64 = .min
    private var recurringHeightMs = 0.0
    private(set) var spikes = 0

    init(quantile: Double, initialDelayMs: Double, ceilingMs: Double) {
        self.quantile = quantile
        self.ceilingMs = ceilingMs
        histogram = [Double](repeating: 0, count: Int(ceilingMs / Self.bucketMs) + 1)
        histogram[bucket(initialDelayMs)] = 1
    }

    /// The quantile of the relative delays, ms.
    var quantileMs: Double {
        var sum = 0.0
        for (index, weight) in histogram.enumerated() {
            sum += weight
            if sum >= quantile { return Double(index + 1) * Self.bucketMs }
        }
        return ceilingMs
    }

    /// The delay the buffer should hold ahead of playout at `nowMs`, for packets of `packetMs`.
    func targetMs(nowMs: Int64, packetMs: Double) -> Double {
        var relative = quantileMs
        if nowMs < recurringUntilMs { relative = max(relative, recurringHeightMs) }
        return min(max(relative + packetMs, packetMs), ceilingMs - packetMs)
    }

    /// One packet (media time `mediaMs` on the sender's clock) arrived at `arrivalMs`.
    mutating func add(arrivalMs: Int64, mediaMs: Double) {
        let transit = Double(arrivalMs) - mediaMs
        recent.append((arrivalMs, transit))
        if let stale = recent.firstIndex(where: { $0.arrivalMs > arrivalMs - Self.windowMs }), stale > 0 {
            recent.removeFirst(stale)
        }
        let relative = transit - recent.reduce(transit) { min($0, $1.transitMs) }
        let base = quantileMs
        packets += 1
        if packets > Self.spikeWarmup, relative > max(2 * base, base + Self.spikeHeightMs) {
            noteSpike(arrivalMs: arrivalMs, heightMs: relative)
            return
        }
        let forget = min(Self.forgetFactor, 1 - 1 / Double(packets + 1))
        for index in histogram.indices { histogram[index] *= forget }
        histogram[bucket(relative)] += 1 - forget
    }

    /// Forgets the stream (a sender restart: transit times start afresh).
    mutating func resetWindow() {
        recent = []
    }

    private mutating func noteSpike(arrivalMs: Int64, heightMs: Double) {
        if spikeLastMs.map({ arrivalMs - $0 > Self.spikeGapMs }) ?? true {
            spikes += 1
            if let start = spikeStartMs, arrivalMs - start < Self.spikePeriodMs {
                recurringUntilMs = arrivalMs + Self.spikeHoldMs
                recurringHeightMs = 0
            }
            spikeStartMs = arrivalMs
        }
        spikeLastMs = arrivalMs
        if arrivalMs < recurringUntilMs { recurringHeightMs = max(recurringHeightMs, min(heightMs, ceilingMs)) }
    }

    private func bucket(_ ms: Double) -> Int {
        min(histogram.count - 1, max(0, Int(ms / Self.bucketMs)))
    }
}

/// Sender/receiver clock skew from the drift of the smallest transit time: the minimum per 5 s window, and a
/// least-squares line through the last 60 windows (5 minutes). Positive: the sender's clock runs fast.
struct DriftEstimator {
    static let windowMs: Int64 = 5000
    static let windows = 60
    /// Windows needed before the estimate is used (30 s: ±1 ms of jitter in the minima is then ±30 ppm).
    static let minimumWindows = 6

    private var minima: [(centreMs: Double, transitMs: Double)] = []
    private var current: (startMs: Int64, transitMs: Double)?

    /// The skew in ppm, once enough windows have passed.
    private(set) var ppm: Double?

    mutating func add(arrivalMs: Int64, mediaMs: Double) {
        let transit = Double(arrivalMs) - mediaMs
        guard let window = current, arrivalMs < window.startMs + Self.windowMs else {
            if let window = current { close(window) }
            current = (arrivalMs, transit)
            return
        }
        current = (window.startMs, min(window.transitMs, transit))
    }

    /// Forgets the stream (a sender restart).
    mutating func reset() {
        minima = []
        current = nil
        ppm = nil
    }

    private mutating func close(_ window: (startMs: Int64, transitMs: Double)) {
        minima.append((Double(window.startMs) + Double(Self.windowMs) / 2, window.transitMs))
        if minima.count > Self.windows { minima.removeFirst() }
        guard minima.count >= Self.minimumWindows else { return }
        let n = Double(minima.count)
        let meanX = minima.map(\.centreMs).reduce(0, +) / n
        let meanY = minima.map(\.transitMs).reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0
        for (x, y) in minima {
            sxy += (x - meanX) * (y - meanY)
            sxx += (x - meanX) * (x - meanX)
        }
        ppm = sxx > 0 ? -sxy / sxx * 1_000_000 : nil
    }
}
