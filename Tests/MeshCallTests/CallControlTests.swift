import MeshCall
import MeshIdentity
import MeshRouting
import MeshTestKit
import Testing

struct CallControlTests {
    private func keyPair(_ seed: UInt64) -> PrivateKey {
        var rng = SplitMix64(seed: seed)
        return rng.privateKey()
    }

    @Test func messagesRoundTripAndMalformedOnesAreRefused() {
        let target = keyPair(1).address
        for message in [ControlMessage.state(hold: true, judged: .normal, current: .normal), .state(hold: false, judged: .degraded, current: .studio),
                        .transfer(to: target), .transferFailed(.busy), .propose(id: 7, tier: .good, atMs: 12_345), .answer(id: 7, accept: false)] {
            for fromCaller in [true, false] {
                let envelope = ControlEnvelope(fromCaller: fromCaller, sequence: 77, message: message)
                #expect(ControlEnvelope(parsing: envelope.serialize()) == envelope)
            }
        }
        let good = ControlEnvelope(fromCaller: true, sequence: 1, message: .state(hold: true, judged: .normal, current: .normal)).serialize()
        #expect(ControlEnvelope(parsing: good + [0]) == nil, "trailing bytes")
        #expect(ControlEnvelope(parsing: Array(good.dropLast())) == nil, "truncated")
        #expect(ControlEnvelope(parsing: [2] + good.dropFirst()) == nil, "no such side")
        #expect(ControlEnvelope(parsing: Array(good.prefix(5)) + [9, 0]) == nil, "no such kind")
        for (index, value, what) in [(6, UInt8(2), "unknown flags"), (7, 9, "no such judged tier"), (8, 5, "no such current tier")] {
            var bad = good
            bad[index] = value
            #expect(ControlEnvelope(parsing: bad) == nil, "\(what)")
        }
    }

    @Test func onlyTheEndsKeyOpensAControlMessage() {
        let a = EndToEndKey(label: "meshcall/v1/control", tag: 0x40, callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 2, count: 30))
        let other = EndToEndKey(label: "meshcall/v1/control", tag: 0x40, callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 3, count: 30))
        let ice = EndToEndKey(label: "meshcall/v1/ice", tag: 0x30, callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 2, count: 30))
        let content = ControlEnvelope(fromCaller: false, sequence: 3, message: .state(hold: true, judged: .normal, current: .normal)).serialize()
        let sealed = a.seal(content)
        #expect(a.open(sealed) == content)
        #expect(other.open(sealed) == nil)
        #expect(ice.open(sealed) == nil, "another label's key")
        var flipped = sealed
        flipped[5] ^= 1
        #expect(a.open(flipped) == nil)
    }

    /// Hold goes at once, is repeated while held (it is what keeps a held call alive) and for a while after a change,
    /// and the other end answers with its own state so both repeat.
    @Test func holdIsSignalledAsRepeatedState() {
        var caller = CallControl(caller: true)
        var callee = CallControl(caller: false)
        #expect(caller.sends && caller.plays && callee.sends && callee.plays)
        let held = caller.hold(true, now: 0)!
        #expect(held.message == .state(hold: true, judged: .normal, current: .normal))
        let again = caller.hold(true, now: 1)
        #expect(again == nil, "already held")
        #expect(!caller.sends && !caller.plays)
        let events = callee.receive(held, now: 10)
        #expect(events.first == .remoteHold(true))
        guard case .send(let answer)? = events.last else { Issue.record("no answer"); return }
        #expect(answer.message == .state(hold: false, judged: .normal, current: .normal) && !answer.fromCaller)
        #expect(callee.remoteHold && !callee.sends && !callee.plays, "a held call carries no media either way")
        let unchanged = caller.receive(answer, now: 20)
        #expect(unchanged.isEmpty, "the other end's unchanged state changes nothing")

        // Repeats: once a second while held, long after the change.
        var repeats = 0
        for now in stride(from: Int64(20), through: 30_000, by: 20) where !caller.tick(now: now).isEmpty { repeats += 1 }
        #expect((29...30).contains(repeats))
        let resumed = caller.hold(false, now: 30_000)!
        let resumedEvents = callee.receive(resumed, now: 30_010)
        #expect(resumedEvents.first == .remoteHold(false))
        #expect(caller.sends && callee.sends && callee.plays)
        // Then only for the settling time after the change.
        var after = 0
        for now in stride(from: Int64(30_020), through: 60_000, by: 20) where !caller.tick(now: now).isEmpty { after += 1 }
        #expect(after == Int(CallControl.settleMs / CallControl.repeatMs))
    }

    @Test func replaysAndOwnSideMessagesChangeNothing() {
        var caller = CallControl(caller: true)
        var callee = CallControl(caller: false)
        let hold = caller.hold(true, now: 0)!
        let resume = caller.hold(false, now: 100)!
        let (first, second, replayed) = (callee.receive(hold, now: 1), callee.receive(resume, now: 101), callee.receive(hold, now: 102))
        #expect(first.first == .remoteHold(true))
        #expect(second.first == .remoteHold(false))
        #expect(replayed.isEmpty, "a recorded hold replayed by a relay")
        #expect(!callee.remoteHold)
        var mine = CallControl(caller: false)
        let own = mine.receive(ControlEnvelope(fromCaller: false, sequence: 9, message: .state(hold: true, judged: .normal, current: .normal)), now: 0)
        #expect(own.isEmpty)
    }

    @Test func blindTransferAsksTheCallerAndReportsAFailure() {
        var caller = CallControl(caller: true)
        var callee = CallControl(caller: false)
        let target = keyPair(2).address
        let byCaller = caller.askTransfer(to: target)
        #expect(byCaller == nil, "only the callee transfers")
        let ask = callee.askTransfer(to: target)!
        #expect(callee.transfer == .asked(target))
        let events = caller.receive(ask, now: 5)
        #expect(events.first == .transferAsked(target))
        #expect(caller.transfer == .placing(target))
        #expect(caller.localHold, "the call waits on hold while the target is called")
        #expect(events.contains { if case .send(let e) = $0 { e.message == .state(hold: true, judged: .normal, current: .normal) } else { false } })
        let failed = caller.transferFailed(.busy)!
        #expect(caller.transfer == .failed(target, .busy) && caller.localHold, "a failed transfer leaves the call on hold")
        let told = callee.receive(failed, now: 10)
        #expect(told == [.transferFailed(.busy)])
        #expect(callee.transfer == .failed(target, .busy))
        let twice = caller.transferFailed(.busy)
        #expect(twice == nil, "nothing is being placed any more")
    }

    /// The caller takes quelch notices from the nodes of its path only and never a replayed one; each signer's
    /// quelch counts until that signer lifts it.
    @Test func quelchNoticesCountFromThePathOnly() {
        let relay = keyPair(3)
        let stranger = keyPair(4)
        let call = CallID(raw: 42)
        var caller = CallControl(caller: true)
        let path: Set<WalletAddress> = [relay.address]
        let on = QuelchNotice.sign(call: call, on: true, counter: 100, key: relay)
        #expect(QuelchNotice(parsing: on.serialize()) == on)
        #expect(on.signer == relay.address)
        let fromStranger = caller.receive(QuelchNotice.sign(call: call, on: true, counter: 100, key: stranger), allowed: path)
        #expect(!fromStranger)
        #expect(caller.sends)
        let quelched = caller.receive(on, allowed: path)
        #expect(quelched)
        #expect(!caller.sends && caller.quelchedBy == path)
        let off = QuelchNotice.sign(call: call, on: false, counter: 101, key: relay)
        let lifted = caller.receive(off, allowed: path)
        #expect(lifted)
        #expect(caller.sends)
        let replay = caller.receive(on, allowed: path)
        #expect(!replay, "replayed")
        #expect(caller.sends)
        var tampered = on.serialize()
        tampered[8] = 0
        #expect(QuelchNotice(parsing: tampered)?.signer != relay.address, "the flag is signed")
        // The callee only shows it: its media is not the one stopped.
        var callee = CallControl(caller: false)
        let shown = callee.receive(QuelchNotice.sign(call: call, on: true, counter: 1, key: stranger), allowed: nil)
        #expect(shown)
        #expect(callee.sends && callee.plays)
        callee.quelchedHere = true
        #expect(!callee.plays && callee.sends)
    }

    // MARK: quality

    /// Delivers every control message one end's events carry to the other end, until nothing is left.
    private static func exchange(_ events: [CallControl.Event], from sender: inout CallControl, to receiver: inout CallControl,
                                 now: Int64) {
        var pending = events.compactMap { if case .send(let e) = $0 { e } else { nil } }
        var towardReceiver = true
        while !pending.isEmpty {
            let replies = pending.flatMap { towardReceiver ? receiver.receive($0, now: now) : sender.receive($0, now: now) }
            pending = replies.compactMap { if case .send(let e) = $0 { e } else { nil } }
            towardReceiver.toggle()
        }
    }

    private static func switches(_ events: [CallControl.Event]) -> [QualityTier] {
        events.compactMap { if case .switchTier(let tier, _) = $0 { tier } else { nil } }
    }

    /// A relay's verdict below the call's tier moves each end down at once; one from a node off the path, or replayed,
    /// changes nothing; the tier comes back up only through the caller's proposal, which the callee accepts.
    @Test func relayVerdictsMoveBothEndsDownAtOnceAndUpByConsent() throws {
        let relay = keyPair(5)
        let stranger = keyPair(6)
        let path: Set<WalletAddress> = [relay.address]
        var caller = CallControl(caller: true, ceiling: .normal)
        var callee = CallControl(caller: false, ceiling: .normal)
        let bad = QualityVerdict.sign(call: 1, tier: .catastrophic, sample: QualitySample(lossPercent: 20, rttMs: 10), counter: 10, key: relay)
        let forged = caller.receive(QualityVerdict.sign(call: 1, tier: .catastrophic, sample: QualitySample(lossPercent: 20, rttMs: 10),
                                                        counter: 10, key: stranger), allowed: path, now: 0)
        #expect(forged == nil, "not on the path")
        let atCallerResult = caller.receive(bad, allowed: path, now: 0)
        let atCaller = try #require(atCallerResult)
        let atCalleeResult = callee.receive(bad, allowed: nil, now: 5)
        let atCallee = try #require(atCalleeResult)
        #expect(Self.switches(atCaller) == [.catastrophic] && Self.switches(atCallee) == [.catastrophic])
        #expect(caller.tier == .catastrophic && caller.tierWhy.contains(relay.address.checksummed))
        let replayed = caller.receive(bad, allowed: path, now: 100)
        #expect(replayed == nil, "replayed")

        // The relay judges normal again: the caller proposes, the callee accepts (its own judges allow it), both move.
        let good = QualityVerdict.sign(call: 1, tier: .normal, sample: QualitySample(lossPercent: 0, rttMs: 10), counter: 20, key: relay)
        _ = callee.receive(good, allowed: nil, now: 15_000)
        let heard = caller.receive(good, allowed: path, now: 15_000)
        #expect(heard.map(Self.switches) == [], "no move up without the callee's consent")
        let early = caller.tick(now: 15_500)
        #expect(!early.contains { if case .send(let e) = $0, case .propose = e.message { true } else { false } },
                "not before every judgement allowed it for a second")
        let proposal = caller.tick(now: 16_000)
        #expect(proposal.contains { if case .send(let e) = $0, case .propose(_, .normal, 16_500) = e.message { true } else { false } },
                "to switch half a second on, in call time")
        Self.exchange(proposal, from: &caller, to: &callee, now: 16_010)
        #expect(caller.tier == .catastrophic && callee.tier == .catastrophic, "accepted, not yet due")
        let (callerDue, calleeDue) = (caller.tick(now: 16_500), callee.tick(now: 16_500))
        #expect(Self.switches(callerDue) == [.normal] && Self.switches(calleeDue) == [.normal], "both at the agreed call time")
        #expect(caller.switches.map(\.to) == ["catastrophic", "normal"])
    }

    /// An end whose own judge sees loss rejects a proposal; the caller then waits out the cool-down; a proposal
    /// nobody answers times out into the cool-down as well.
    @Test func aStrugglingEndRejectsAndTheCallerCoolsDown() throws {
        let relay = keyPair(7)
        let path: Set<WalletAddress> = [relay.address]
        var caller = CallControl(caller: true, ceiling: .normal)
        var callee = CallControl(caller: false, ceiling: .normal)
        let down = QualityVerdict.sign(call: 1, tier: .degraded, sample: QualitySample(lossPercent: 6, rttMs: 10), counter: 1, key: relay)
        _ = caller.receive(down, allowed: path, now: 0)
        _ = callee.receive(down, allowed: nil, now: 0)
        // The callee's own receiver loses 7 % for three seconds: its judge says degraded too.
        for second in 1...3 { _ = callee.judge(QualitySample(lossPercent: 7, rttMs: nil), now: Int64(second) * 1_000) }
        #expect(callee.own.tier == .degraded)
        let up = QualityVerdict.sign(call: 1, tier: .normal, sample: QualitySample(lossPercent: 0, rttMs: 10), counter: 2, key: relay)
        _ = callee.receive(up, allowed: nil, now: 4_000)
        _ = caller.receive(up, allowed: path, now: 4_000)
        let proposal = caller.tick(now: 5_000)
        Self.exchange(proposal, from: &caller, to: &callee, now: 5_000)
        _ = (caller.tick(now: 5_500), callee.tick(now: 5_500))
        #expect(caller.tier == .degraded && callee.tier == .degraded, "rejected")
        let soon = caller.tick(now: 20_000)
        #expect(!soon.contains { if case .send(let e) = $0, case .propose = e.message { true } else { false } }, "cooling down")
        let later = caller.tick(now: 35_001)
        #expect(later.contains { if case .send(let e) = $0, case .propose = e.message { true } else { false } }, "proposes again")
        _ = caller.tick(now: 37_001)
        let afterTimeout = caller.tick(now: 40_000)
        #expect(!afterTimeout.contains { if case .send(let e) = $0, case .propose = e.message { true } else { false } },
                "the unanswered proposal timed out into a new cool-down")
        #expect(caller.tier == .degraded)
    }

    /// The other end's judgement is one of the judges: its downgrade is followed at once; on a direct path the relays'
    /// verdicts do not count. An end's stale state (from before a switch both agreed on) moves nothing down.
    @Test func theOtherEndsDowngradeIsFollowedAndDirectPathsIgnoreRelays() {
        let relay = keyPair(8)
        var caller = CallControl(caller: true, ceiling: .normal)
        var callee = CallControl(caller: false, ceiling: .normal)
        let events = callee.judge(QualitySample(lossPercent: 30, rttMs: nil), now: 1_000)
        #expect(Self.switches(events) == [.catastrophic])
        Self.exchange(events, from: &callee, to: &caller, now: 1_010)
        #expect(caller.tier == .catastrophic, "the callee's downgrade is mandatory for the caller too")
        var fresh = CallControl(caller: false, ceiling: .normal)
        let stale = fresh.receive(ControlEnvelope(fromCaller: true, sequence: 5, message: .state(hold: false, judged: .normal, current: .degraded)),
                                  now: 0)
        #expect(Self.switches(stale).isEmpty && fresh.tier == .normal, "where the other end stands is not a judgement")

        // A callee held down by a verdict the caller no longer has (the caller moved up without it) follows the
        // caller once that verdict is gone.
        var held = CallControl(caller: false, ceiling: .normal)
        let low = QualityVerdict.sign(call: 1, tier: .degraded, sample: QualitySample(lossPercent: 6, rttMs: 10), counter: 1, key: relay)
        _ = held.receive(low, allowed: nil, now: 0)
        let callerUp = held.receive(ControlEnvelope(fromCaller: true, sequence: 9, message: .state(hold: false, judged: .normal, current: .normal)),
                                    now: 1_000)
        #expect(Self.switches(callerUp).isEmpty && held.tier == .degraded, "its own judges do not allow it yet")
        let later = held.tick(now: CallControl.verdictLifetimeMs + 1)
        #expect(Self.switches(later) == [.normal], "the verdict expired: up to where the caller is")

        var direct = CallControl(caller: true, ceiling: .normal)
        direct.direct = true
        let verdict = QualityVerdict.sign(call: 1, tier: .catastrophic, sample: QualitySample(lossPercent: 30, rttMs: 10), counter: 1, key: relay)
        let ignored = direct.receive(verdict, allowed: [relay.address], now: 0)
        #expect(ignored.map(Self.switches) == [], "taken, but a relay carries no media of a direct call")
        #expect(direct.tier == .normal)
    }
}

