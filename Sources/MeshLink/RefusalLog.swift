/// Log lines for refusals that repeat (a peer dialled every few seconds with a clock or key we refuse), at most
/// one per endpoint and interval: the first refusal from an endpoint is logged at once; later ones within the
/// interval are only counted, and when the interval is over the last line is logged again with that count
/// (`flush`). Bounded: beyond `limit` endpoints, new ones are not logged (their counters still count them).
struct RefusalLog<Address: Hashable & Sendable>: Sendable {
    private struct Entry {
        var loggedAt: Int64
        var reason: String
        var suppressed: Int
    }

    let intervalMs: Int64
    let limit: Int
    private var entries: [Address: Entry] = [:]

    init(intervalMs: Int64, limit: Int) {
        self.intervalMs = intervalMs
        self.limit = limit
    }

    /// When `flush` next has a line to log: the end of the earliest interval with refusals not logged.
    var nextFlush: Int64? {
        var next: Int64?
        for entry in entries.values where entry.suppressed > 0 { next = min(next ?? .max, entry.loggedAt + intervalMs) }
        return next
    }

    /// Whether the next refusal from `endpoint` is logged (for a reason that costs work to tell).
    func logsNext(_ endpoint: Address) -> Bool {
        entries[endpoint] == nil && entries.count < limit
    }

    /// A refusal from `endpoint`: the line to log now, or nil when one was logged within the interval (then it
    /// is counted for the next `flush`). `reason` is only evaluated for a line that is logged.
    mutating func note(_ endpoint: Address, now: Int64, reason: @autoclosure () -> String) -> String? {
        guard logsNext(endpoint) else {
            entries[endpoint]?.suppressed += 1
            return nil
        }
        let line = reason()
        entries[endpoint] = Entry(loggedAt: now, reason: line, suppressed: 0)
        return line
    }

    /// The endpoints whose interval is over: those with refusals not logged get their last line again, with how
    /// many there were ("… (and 7 more in 60 s, not logged)") and a new interval; the others are forgotten.
    mutating func flush(now: Int64) -> [(Address, String)] {
        var lines: [(Address, String)] = []
        for (endpoint, entry) in entries where now - entry.loggedAt >= intervalMs {
            guard entry.suppressed > 0 else {
                entries[endpoint] = nil
                continue
            }
            let seconds = (now - entry.loggedAt) / 1000
            lines.append((endpoint, "\(entry.reason) (and \(entry.suppressed) more in \(seconds) s, not logged)"))
            entries[endpoint] = Entry(loggedAt: now, reason: entry.reason, suppressed: 0)
        }
        return lines
    }
}
