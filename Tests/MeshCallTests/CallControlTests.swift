import MeshCall
import MeshIdentity
import MeshTestKit
import Testing

struct CallControlTests {
    private func keyPair(_ seed: UInt64) -> PrivateKey {
        var rng = SplitMix64(seed: seed)
        return rng.privateKey()
    }

    @Test func messagesRoundTripAndMalformedOnesAreRefused() {
        let target = keyPair(1).address
        for message in [ControlMessage.state(hold: true), .state(hold: false), .transfer(to: target), .transferFailed(.busy)] {
            for fromCaller in [true, false] {
                let envelope = ControlEnvelope(fromCaller: fromCaller, sequence: 77, message: message)
                #expect(ControlEnvelope(parsing: envelope.serialize()) == envelope)
            }
        }
        let good = ControlEnvelope(fromCaller: true, sequence: 1, message: .state(hold: true)).serialize()
        #expect(ControlEnvelope(parsing: good + [0]) == nil, "trailing bytes")
        #expect(ControlEnvelope(parsing: Array(good.dropLast())) == nil, "truncated")
        #expect(ControlEnvelope(parsing: [2] + good.dropFirst()) == nil, "no such side")
        #expect(ControlEnvelope(parsing: Array(good.prefix(5)) + [9, 0]) == nil, "no such kind")
        #expect(ControlEnvelope(parsing: Array(good.dropLast()) + [2]) == nil, "unknown flags")
    }

    @Test func onlyTheEndsKeyOpensAControlMessage() {
        let a = EndToEndKey(label: "meshcall/v1/control", tag: 0x40, callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 2, count: 30))
        let other = EndToEndKey(label: "meshcall/v1/control", tag: 0x40, callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 3, count: 30))
        let ice = EndToEndKey(label: "meshcall/v1/ice", tag: 0x30, callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 2, count: 30))
        let content = ControlEnvelope(fromCaller: false, sequence: 3, message: .state(hold: true)).serialize()
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
        #expect(held.message == .state(hold: true))
        let again = caller.hold(true, now: 1)
        #expect(again == nil, "already held")
        #expect(!caller.sends && !caller.plays)
        let events = callee.receive(held, now: 10)
        #expect(events.first == .remoteHold(true))
        guard case .send(let answer)? = events.last else { Issue.record("no answer"); return }
        #expect(answer.message == .state(hold: false) && !answer.fromCaller)
        #expect(callee.remoteHold && !callee.sends && !callee.plays, "a held call carries no media either way")
        let unchanged = caller.receive(answer, now: 20)
        #expect(unchanged.isEmpty, "the other end's unchanged state changes nothing")

        // Repeats: once a second while held, long after the change.
        var repeats = 0
        for now in stride(from: Int64(20), through: 30_000, by: 20) where caller.tick(now: now) != nil { repeats += 1 }
        #expect((29...30).contains(repeats))
        let resumed = caller.hold(false, now: 30_000)!
        let resumedEvents = callee.receive(resumed, now: 30_010)
        #expect(resumedEvents.first == .remoteHold(false))
        #expect(caller.sends && callee.sends && callee.plays)
        // Then only for the settling time after the change.
        var after = 0
        for now in stride(from: Int64(30_020), through: 60_000, by: 20) where caller.tick(now: now) != nil { after += 1 }
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
        let own = mine.receive(ControlEnvelope(fromCaller: false, sequence: 9, message: .state(hold: true)), now: 0)
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
        #expect(events.contains { if case .send(let e) = $0 { e.message == .state(hold: true) } else { false } })
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
}
