/// The audio a control client feeds into a call (`mesh-node call --play`) or the echo loop, between the
/// feeder's clock and the node's 20 ms media grid. Pure: one `push` per frame that arrives, one `pull` per tick.
///
/// When the feeder stalls, the grid goes on: the ticks of the stall find nothing (the caller sends silence) and
/// the frames come afterwards in a burst. A plain queue would then hold them for good, every later frame as
/// late as the stall was long. The feed measures the surplus instead — the fewest frames left after a pull
/// over a whole window: what the grid never needed — and sheds it where it is not heard: quiet frames at the
/// next pause, or, after `catchUpAfterTicks` of speech without one, one frame per window.
public struct ClientFeed: Sendable {
    /// Frames that may wait (one second); beyond it the oldest are dropped.
    public static let capacity = 50
    /// Ticks over which the surplus is measured (one second).
    public static let windowTicks = 50
    /// A frame at or below this level (−dBov: 45 means −45 dBFS RMS or quieter) is a pause, and may be dropped.
    public static let quietLevel: UInt8 = 45
    /// Ticks a surplus may wait for a pause before frames are dropped anyway (one per window).
    public static let catchUpAfterTicks = 100

    private var frames: [[Int16]] = []
    /// Fewest frames left after a pull in this window.
    private var lowest = Int.max
    private var ticks = 0
    /// Frames to shed.
    private var surplus = 0
    /// Ticks the surplus has waited for a pause.
    private var waited = 0
    /// Frames shed at pauses, dropped by the catch-up, dropped because the feed was full.
    public private(set) var droppedQuiet = 0
    public private(set) var droppedCatchUp = 0
    public private(set) var droppedOverflow = 0

    public init() {}

    public var count: Int { frames.count }

    public mutating func push(_ frame: [Int16]) {
        frames.append(frame)
        if frames.count > Self.capacity {
            droppedOverflow += frames.count - Self.capacity
            frames.removeFirst(frames.count - Self.capacity)
        }
    }

    /// The frame for this tick; nil when the feeder has nothing (a stall, or it ended).
    public mutating func pull() -> [Int16]? {
        shed()
        let frame = frames.isEmpty ? nil : frames.removeFirst()
        lowest = min(lowest, frames.count)
        ticks += 1
        if ticks == Self.windowTicks {
            surplus = lowest
            if surplus == 0 { waited = 0 }
            lowest = Int.max
            ticks = 0
        }
        return frame
    }

    /// Drops surplus frames: quiet ones at the head, else one after the catch-up wait. Always leaves a frame
    /// to play now; a surplus the feed has since lost (the feeder slowed down) is forgotten.
    private mutating func shed() {
        surplus = min(surplus, max(0, frames.count - 1))
        guard surplus > 0 else { return }
        while surplus > 0, let head = frames.first, AudioLevel(voice: false, samples: head).level >= Self.quietLevel {
            frames.removeFirst()
            surplus -= 1
            droppedQuiet += 1
        }
        guard surplus > 0 else {
            waited = 0
            return
        }
        waited += 1
        if waited >= Self.catchUpAfterTicks {
            frames.removeFirst()
            surplus -= 1
            droppedCatchUp += 1
            waited = Self.catchUpAfterTicks - Self.windowTicks
        }
    }
}
