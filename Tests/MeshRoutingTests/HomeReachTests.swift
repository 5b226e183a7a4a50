import MeshIdentity
@testable import MeshRouting
import Testing

@Suite struct HomeReachTests {
    let home = PrivateKey().address
    let relay = PrivateKey().address

    func plan(dialHome: Bool = true, now: Int64 = 1_000) -> HomeReach<String> {
        var targets: [(endpoint: String, node: WalletAddress)] = [("relay:1", relay)]
        if dialHome { targets.insert(("home:1", home), at: 0) }
        return HomeReach(home: home, relays: [relay], targets: targets, now: now)
    }

    func dialled(_ step: HomeReach<String>.Step) -> [String]? {
        guard case .wait(let dial, _) = step else { return nil }
        return dial.map(\.endpoint)
    }

    func deadline(_ step: HomeReach<String>.Step) -> Int64? {
        guard case .wait(_, let deadline) = step else { return nil }
        return deadline
    }

    @Test func aRoutedHomeOrNothingToDialIsReadyAtOnce() {
        var routed = plan()
        guard case .ready = routed.step(now: 1_000, isUp: { _ in false }, routed: true) else { Issue.record("not ready"); return }
        var bare = HomeReach<String>(home: home, relays: [], targets: [], now: 1_000)
        guard case .ready = bare.step(now: 1_000, isUp: { _ in false }, routed: false) else { Issue.record("not ready"); return }
    }

    @Test func everyTargetNotUpIsDialledAtOnceAndAgainEvery500ms() {
        var p = plan()
        let first = p.step(now: 1_000, isUp: { _ in false }, routed: false)
        #expect(dialled(first) == ["home:1", "relay:1"])
        #expect(deadline(first) == 1_500)
        #expect(dialled(p.step(now: 1_200, isUp: { _ in false }, routed: false)) == [], "not before the redial")
        #expect(dialled(p.step(now: 1_500, isUp: { _ in false }, routed: false)) == ["home:1", "relay:1"])
    }

    @Test func aRelayUpIsTakenAtOnceWhenTheHomeNodeWasNotDialled() {
        var p = plan(dialHome: false)
        #expect(dialled(p.step(now: 1_000, isUp: { _ in false }, routed: false)) == ["relay:1"])
        guard case .ready = p.step(now: 1_100, isUp: { $0 == relay }, routed: false) else { Issue.record("not ready"); return }
    }

    @Test func aDialledHomeNodeGetsItsGraceBeforeARelayThatIsUp() {
        var p = plan()
        _ = p.step(now: 1_000, isUp: { _ in false }, routed: false)
        let waiting = p.step(now: 1_100, isUp: { $0 == relay }, routed: false)
        #expect(dialled(waiting) == [])
        #expect(deadline(waiting) == 1_500, "the redial comes first")
        let redial = p.step(now: 1_500, isUp: { $0 == relay }, routed: false)
        #expect(dialled(redial) == ["home:1"], "only what is not up")
        #expect(deadline(redial) == 1_000 + HomeReach<String>.homeGraceMs, "stepped again when the grace ends")
        guard case .ready = p.step(now: 1_000 + HomeReach<String>.homeGraceMs, isUp: { $0 == relay }, routed: false) else {
            Issue.record("not ready after the grace")
            return
        }
    }

    @Test func afterTheTimeoutItGoesOnWithWhatThereIs() {
        var p = plan()
        var now: Int64 = 1_000
        while now < 1_000 + HomeReach<String>.timeoutMs {
            guard case .wait(_, let deadline) = p.step(now: now, isUp: { _ in false }, routed: false) else {
                Issue.record("ready before the timeout at \(now)")
                return
            }
            #expect(deadline > now && deadline <= 1_000 + HomeReach<String>.timeoutMs)
            now = deadline
        }
        guard case .ready = p.step(now: now, isUp: { _ in false }, routed: false) else { Issue.record("not ready"); return }
    }
}
