import MeshIdentity

/// How a caller's node reaches a callee's home node that neither a link nor a node route reaches yet, before it
/// builds the call's first chain (docs/routing.md, "Reaching a home node nobody is linked to"). Pure: the shell
/// steps it with `now` and what the link layer and gossip say, at the end of every turn of its loop and at
/// `deadline`, and dials what it asks for.
///
/// Links are opened (pinned to their node keys) to the home node's endpoints and to the relays its presence record
/// lists, at once, again every `redialMs`. The plan is done when the home node is reachable; or when a listed relay
/// is up and either the home node was not dialled or it had `homeGraceMs` to accept; or after `timeoutMs` with what
/// there is (the chain set-up then says whether any route exists).
public struct HomeReach<Endpoint: Sendable>: Sendable {
    public let home: WalletAddress
    /// The relays the home node's record lists.
    public let relays: [WalletAddress]
    /// The endpoints to dial, each with the node key to pin.
    public let targets: [(endpoint: Endpoint, node: WalletAddress)]
    public let started: Int64
    private var nextDial: Int64

    public static var redialMs: Int64 { 500 }
    public static var homeGraceMs: Int64 { 800 }
    public static var timeoutMs: Int64 { 2_000 }

    public init(home: WalletAddress, relays: [WalletAddress], targets: [(endpoint: Endpoint, node: WalletAddress)], now: Int64) {
        self.home = home
        self.relays = relays
        self.targets = targets
        started = now
        nextDial = now
    }

    public enum Step: Sendable {
        /// Build the chain now.
        case ready
        /// Dial these (none when it is not time yet), and step again by `deadline` at the latest.
        case wait(dial: [(endpoint: Endpoint, node: WalletAddress)], deadline: Int64)
    }

    /// `isUp`: whether a link to a node is up; `routed`: whether a link or a node route reaches the home node.
    public mutating func step(now: Int64, isUp: (WalletAddress) -> Bool, routed: Bool) -> Step {
        let relayUp = relays.contains(where: isUp)
        let homeDialled = targets.contains { $0.node == home }
        let waited = now - started
        if routed || targets.isEmpty || waited >= Self.timeoutMs || (relayUp && (!homeDialled || waited >= Self.homeGraceMs)) {
            return .ready
        }
        var dial: [(endpoint: Endpoint, node: WalletAddress)] = []
        if now >= nextDial {
            dial = targets.filter { !isUp($0.node) }
            nextDial = now + Self.redialMs
        }
        var deadline = min(nextDial, started + Self.timeoutMs)
        if relayUp { deadline = min(deadline, started + Self.homeGraceMs) }
        return .wait(dial: dial, deadline: deadline)
    }
}
