import MeshCall
import MeshControl
import MeshIdentity
import MeshMedia
import MeshRouting
import MeshWire
import NIOCore

/// One answered call's control channel: the pure state (`CallControl`), the key its messages are sealed with, and
/// what this end's judge last took from its receiver.
struct ControlChannel {
    var state: CallControl
    let key: EndToEndKey
    var nextJudgeAt: Int64
    var received = 0
    var lost = 0
    var loss = LossMeter()
    /// Signature recoveries this call's signed notices and verdicts may cost: a relay on the path that floods them
    /// cannot make this end spend more (the rest are refused and counted).
    var verifications: TokenBucket

    static let verificationRate = TokenBucket.Rate(perSecond: 10, burst: 20)
}

/// Call control (docs/calls.md, "Call control"): hold and resume, mute, quelch by a node on the path, blind transfer.
/// Everything here runs on the event loop.
extension NodeRuntime {
    /// The call is answered: its control channel opens.
    func openControl(_ id: CallID, keys: SRTPKeys, caller: Bool, bitrate: Int, now: Int64) {
        controls[id] = ControlChannel(state: CallControl(caller: caller, ceiling: QualityTier(bitrate: bitrate), answeredAt: now),
                                      key: controlKey(keys, caller: caller), nextJudgeAt: now + QualityJudge.sampleMs,
                                      verifications: TokenBucket(ControlChannel.verificationRate, nowMs: now))
    }

    /// Every media tick: repeated states, proposals timing out, and every `QualityJudge.sampleMs` this end's own
    /// judgement (what its receiver lost; at the caller, the active chain's round trip too); then the media gates.
    func controlTick(now: Int64) {
        for id in Array(controls.keys) where calls.calls[id]?.state == .active {
            guard var channel = controls[id] else { continue }
            channel.state.direct = directs[id]?.isDirect ?? false
            var events = channel.state.tick(now: now)
            if config.qualitySwitching, now >= channel.nextJudgeAt, let m = media[id] {
                channel.nextJudgeAt = now + QualityJudge.sampleMs
                let stats = m.stats
                let (received, lost) = (stats.packetsReceived - channel.received, max(0, stats.packetsLost - channel.lost))
                (channel.received, channel.lost) = (stats.packetsReceived, stats.packetsLost)
                channel.loss.add(expected: received + lost, received: received)
                let loss = channel.loss.take()
                let rtt = channel.state.direct ? nil : relay.chains(call: id.raw, now: now).first { $0.role == "active" }?.rttMs
                events += channel.state.judge(QualitySample(loss, rttMs: rtt, jitterMs: stats.jitterMs), now: now)
            }
            controls[id] = channel
            run(id, events)
        }
    }

    /// Carries out what a call's control state asks for.
    private func run(_ id: CallID, _ events: [CallControl.Event]) {
        for event in events {
            switch event {
            case .send(let envelope):
                sendControl(id, envelope)
            case .remoteHold(let on):
                logger.info(on ? "call held by the other end" : "call resumed by the other end", metadata: ["call": "\(id)"])
            case .transferAsked(let target):
                transfer(id, to: target, now: Self.now())
            case .transferFailed(let reason):
                logger.warning("transfer failed; the call stays on hold", metadata: ["call": "\(id)", "reason": "\(reason)"])
            case .switchTier(let tier, let why):
                guard let profile = QualityProfile.named(tier.name) else { continue }
                do {
                    try media[id]?.apply(profile)
                    logger.info("call quality switched", metadata: ["call": "\(id)", "tier": "\(tier.name)", "why": "\(why)"])
                } catch {
                    logger.warning("cannot switch the call's profile", metadata: ["call": "\(id)", "error": "\(error)"])
                }
            }
        }
        applyGates(id)
    }

    private func applyGates(_ id: CallID) {
        guard let state = controls[id]?.state, let m = media[id] else { return }
        m.sends = state.sends
        m.muted = state.muted
        m.plays = state.plays
    }

    private func sendControl(_ id: CallID, _ envelope: ControlEnvelope) {
        guard let key = controls[id]?.key else { return }
        sendCall(id, .control(key.seal(envelope.serialize())))
    }

    /// A control message from the other end. One whose MAC is wrong is dropped and counted; any that opens keeps
    /// the call alive (a held call sends no media).
    func receiveControl(_ id: CallID, _ sealed: [UInt8], now: Int64) {
        guard let channel = controls[id] else { return }
        guard let envelope = channel.key.open(sealed).flatMap(ControlEnvelope.init(parsing:)) else {
            counters.controlBadMac += 1
            return
        }
        core.mediaArrived(id, now: Self.time())
        run(id, controls[id]?.state.receive(envelope, now: now) ?? [])
    }

    /// The nodes whose signed notices and verdicts a call's end takes: at the caller the nodes of its chains and the
    /// callee's home node; at the callee any (only its path's nodes can write into its chain).
    private func signers(_ id: CallID, _ record: CallRecord) -> Set<WalletAddress>? {
        guard record.role == .caller else { return nil }
        var allowed = Set(relay.chains(call: id.raw, now: Self.now()).flatMap(\.nodes).compactMap { try? WalletAddress(parsing: $0) })
        allowed.insert(record.via)
        return allowed
    }

    /// Whether a signed notice or verdict for the call may cost a signature recovery now.
    private func mayVerify(_ id: CallID, now: Int64) -> Bool {
        controls[id]?.verifications.take(ControlChannel.verificationRate, nowMs: now) ?? false
    }

    /// A relay's quality verdict on the call.
    func receiveVerdict(_ id: CallID, _ bytes: [UInt8], now: Int64) {
        guard config.qualitySwitching else { return }
        guard let verdict = QualityVerdict(parsing: bytes), verdict.call == id.raw, let record = calls.calls[id], mayVerify(id, now: now),
              let events = controls[id]?.state.receive(verdict, allowed: signers(id, record), now: now) else {
            counters.verdictRefused += 1
            return
        }
        run(id, events)
    }

    /// A quelch notice from a node on the path. The caller's node takes it from the nodes of its chains and the callee's
    /// home node only; the callee's from any node (only its path can write into its chain).
    func receiveQuelch(_ id: CallID, _ bytes: [UInt8]) {
        guard let notice = QuelchNotice(parsing: bytes), notice.call == id, let record = calls.calls[id], mayVerify(id, now: Self.now()) else {
            counters.quelchRefused += 1
            return
        }
        guard controls[id]?.state.receive(notice, allowed: signers(id, record)) == true else {
            counters.quelchRefused += 1
            return
        }
        logger.info(notice.on ? "call quelched" : "call unquelched", metadata: ["call": "\(id)", "by": "\(notice.signer.map(\.description) ?? "?")"])
        applyGates(id)
    }

    // MARK: commands (control socket)

    /// `call.hold` / `call.resume`.
    func hold(_ params: JSONValue, _ on: Bool) throws -> JSONValue {
        let (id, method) = (try answeredCall(params, method: on ? "call.hold" : "call.resume"), on ? "hold" : "resume")
        if let envelope = controls[id]?.state.hold(on, now: Self.now()) { sendControl(id, envelope) }
        applyGates(id)
        logger.info("call \(method)", metadata: ["call": "\(id)"])
        return controlJSON(id)
    }

    /// `call.mute` / `call.unmute`: local only.
    func mute(_ params: JSONValue, _ on: Bool) throws -> JSONValue {
        let id = try answeredCall(params, method: on ? "call.mute" : "call.unmute")
        controls[id]?.state.muted = on
        applyGates(id)
        return controlJSON(id)
    }

    /// `call.transfer`: at the callee's node, asks the caller's node to call `to` instead.
    func askTransfer(_ params: JSONValue) throws -> JSONValue {
        let id = try answeredCall(params, method: "call.transfer")
        guard let text = params["to"]?.stringValue else { throw RPCError.invalidParams("call.transfer needs \"to\": a wallet address") }
        let target: WalletAddress
        do { target = try WalletAddress(parsing: text) } catch { throw RPCError.invalidParams("\(error)") }
        guard let record = calls.calls[id], record.role == .callee else {
            throw RPCError.failed("only the callee's node transfers a call (blind transfer: the caller's node calls the target)")
        }
        guard target != record.remote else { throw RPCError.invalidParams("\(target) is the caller itself") }
        guard let envelope = controls[id]?.state.askTransfer(to: target) else { throw RPCError.failed("call \(id) cannot be transferred") }
        sendControl(id, envelope)
        logger.info("transfer asked", metadata: ["call": "\(id)", "to": "\(target)"])
        return controlJSON(id)
    }

    /// `call.quelch` / `call.unquelch`: at the callee's node, the caller's media is no longer played here; at a relay,
    /// it is dropped here on its way to the callee. Either way a signed notice goes to the ends.
    func quelch(_ params: JSONValue, _ on: Bool) throws -> JSONValue {
        let method = on ? "call.quelch" : "call.unquelch"
        guard let text = params["call"]?.stringValue?.lowercased(), !text.isEmpty else {
            throw RPCError.invalidParams("\(method) needs \"call\": a call id")
        }
        let counter = nextNoticeCounter()
        if let record = calls.calls.values.first(where: { $0.id.description.hasPrefix(text) && $0.state == .active }) {
            guard record.role == .callee else {
                throw RPCError.failed("the caller's node cannot quelch its own caller; its operator mutes (node-ctl mute)")
            }
            controls[record.id]?.state.quelchedHere = on
            let notice = QuelchNotice.sign(call: record.id, on: on, counter: counter, key: nodeKey)
            sendCall(record.id, .quelch(notice.serialize()))
            applyGates(record.id)
            logger.info(on ? "caller quelched here" : "caller unquelched here", metadata: ["call": "\(record.id)"])
            return controlJSON(record.id)
        }
        let relayed = Set(relay.sessions(now: Self.now()).filter { $0.role == "relay" && $0.call.hasPrefix(text) }.map(\.call))
        guard relayed.count == 1, let call = relayed.first.flatMap(CallID.init(hex:)) else {
            throw RPCError.failed(relayed.isEmpty ? "no active call or relayed session \(text) here" : "call id \(text) is ambiguous")
        }
        let notice = QuelchNotice.sign(call: call, on: on, counter: counter, key: nodeKey)
        withCore { $0.quelch(call: call.raw, on, notice: CallInner.quelch(notice.serialize()).serialize(), now: $1, into: &$2) }
        logger.info(on ? "relayed call quelched" : "relayed call unquelched", metadata: ["call": "\(call)"])
        return .object(["call": .string(call.description), "role": .string("relay"), "quelched": .bool(on)])
    }

    /// The control state of a call as `node-ctl calls` shows it; nil before the call is answered.
    func controlJSON(_ id: CallID) -> JSONValue {
        guard let state = controls[id]?.state else { return .null }
        var object: [String: JSONValue] = [
            "hold": .string(state.localHold && state.remoteHold ? "both" : state.localHold ? "local" : state.remoteHold ? "remote" : "none"),
            "muted": .bool(state.muted),
            "quelchedHere": .bool(state.quelchedHere),
            "quelchedBy": .array(state.quelchedBy.sorted().map { .string($0.checksummed) }),
            "call": .string(id.description),
        ]
        let (allowed, limit) = state.target(now: Self.now())
        object["quality"] = .object([
            "tier": .string(state.tier.name), "why": .string(state.tierWhy), "ceiling": .string(state.ceiling.name),
            "allowed": .string(allowed.name), "limitedBy": .string(limit),
            "own": .object(["tier": .string(state.own.tier.name), "why": .string(state.own.why)]),
            "peer": .string(state.peerJudged.name),
            "verdicts": .array(state.verdicts.sorted { $0.key < $1.key }.map { node, v in
                .object(["node": .string(node.checksummed), "tier": .string(v.tier.name), "figures": .string(v.figures),
                         "ageMs": .number(Double(Self.now() - v.at))])
            }),
            "switches": (try? JSONValue(encoding: state.switches)) ?? .array([]),
        ])
        switch state.transfer {
        case .asked(let target)?: object["transfer"] = .object(["state": .string("asked"), "to": .string(target.checksummed)])
        case .placing(let target)?: object["transfer"] = .object(["state": .string("placing"), "to": .string(target.checksummed)])
        case .failed(let target, let reason)?:
            object["transfer"] = .object(["state": .string("failed"), "to": target.map { .string($0.checksummed) } ?? .null,
                                          "reason": .string(reason.description)])
        case nil: break
        }
        return .object(object)
    }

    /// The answered call whose id starts with `params.call`.
    private func answeredCall(_ params: JSONValue, method: String) throws -> CallID {
        let call = try activeCall(params, method: method)
        guard call.state == .active, controls[call.id] != nil else { throw RPCError.failed("call \(call.id) is not answered yet") }
        return call.id
    }

    // MARK: blind transfer

    /// At the caller's node: the callee asked for `target`. The call is on hold (the state machine put it there);
    /// a new call from the same wallet goes to the target for the same client. Answered, it replaces this one (the
    /// client is told, then this one ends as "transferred"); failed, this one stays on hold and the callee is told.
    private func transfer(_ id: CallID, to target: WalletAddress, now: Int64) {
        guard let record = calls.calls[id], let owner = owners[id], let key = wallets.first(where: { $0.address == record.local }) else {
            failTransfer(id, .failed)
            return
        }
        logger.info("transferring call", metadata: ["call": "\(id)", "to": "\(target)"])
        let next = CallID.random()
        transfers[next] = id
        placeCall(id: next, key: key, to: target, bitrate: record.bitrate, replacing: id, connection: owner).whenFailure { error in
            guard self.transfers.removeValue(forKey: next) != nil else { return }
            self.logger.warning("transfer call failed", metadata: ["call": "\(id)", "error": "\(error)"])
            self.failTransfer(id, .failed)
        }
    }

    /// A call placed for a transfer was answered or ended: the transfer completes or fails.
    func transferOutcome(_ next: CallID, answered: Bool, reason: CallEndReason) {
        guard let old = transfers.removeValue(forKey: next) else { return }
        guard answered else {
            failTransfer(old, reason)
            return
        }
        owners[old]?.notify(method: "call.transferred", params: .object(["call": .string(old.description), "to": .string(next.description)]))
        owners[old] = nil
        hangUp(old, reason: .transferred)
    }

    private func failTransfer(_ id: CallID, _ reason: CallEndReason) {
        if let envelope = controls[id]?.state.transferFailed(reason) { sendControl(id, envelope) }
    }
}
