import HeapModule

/// Pending simulator events, earliest first; ties in insertion order (a heap keyed by time and sequence).
struct EventQueue<Payload> {
    struct Event: Comparable {
        let timeMs: Int64
        let sequence: UInt64
        let payload: Payload

        static func < (a: Event, b: Event) -> Bool { (a.timeMs, a.sequence) < (b.timeMs, b.sequence) }
        static func == (a: Event, b: Event) -> Bool { a.sequence == b.sequence }
    }

    private var heap = Heap<Event>()
    private var nextSequence: UInt64 = 0

    var first: Event? { heap.min }

    mutating func push(timeMs: Int64, _ payload: Payload) {
        heap.insert(Event(timeMs: timeMs, sequence: nextSequence, payload: payload))
        nextSequence += 1
    }

    /// Removes and returns the earliest event if it is due by `timeMs`.
    mutating func popFirst(notAfter timeMs: Int64) -> Event? {
        guard let first = heap.min, first.timeMs <= timeMs else { return nil }
        return heap.removeMin()
    }
}
