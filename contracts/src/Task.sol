// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "./Ownable.sol";
import {INode, ITask, INetworkStats, ITaskQueue} from "./Interfaces.sol";

/// @title Task lifecycle: creation, commit / disclose validation, fee split, cancellation.
/// @notice Encodings:
/// - commitment = keccak256(abi.encodePacked(bytes result, bytes32 nonce)); an error report is the commitment
///   of the empty result, disclosed with `reportTaskError(taskId, round, nonce)` (= `disclose` with result "").
/// - task value V = fee * 1000 / (overheadMs[taskType] + perUnitMs[taskType] * cap) (integer division).
/// - fee split: place scores [10, 9, 6]; share = fee * (commitPlaceScore + disclosePlaceScore) / 50; the
///   result node gets fee - the two other rounds' shares (the dust); a slashed node's share goes back to the
///   creator, as does the share of a node that never disclosed.
/// - commit deadline: commitments are accepted until `commitDeadline` (start + commitTimeout). A node that
///   missed it while its two partners committed is absent: the two disclose and settle 2-of-2, the absent
///   node scores 0, pays the absence penalty (Node) and is paused, and its reserved share (a 3rd place in both
///   rounds, 12/50) goes back to the creator. With fewer than 2 commitments the task can be cancelled at once.
contract Task is Ownable, ITask {
    uint8 public constant TASK_TYPE_SD = 0;
    uint8 public constant TASK_TYPE_GPT = 1;

    uint8 public constant STATE_NONE = 0;
    uint8 public constant STATE_QUEUED = 1;
    uint8 public constant STATE_RUNNING = 2; // waiting for commitments / disclosures, no outcome yet
    uint8 public constant STATE_SUCCESS = 3; // 2 results agree, waiting for the result upload
    uint8 public constant STATE_UPLOADED = 4; // result node paid
    uint8 public constant STATE_ERROR = 5; // 2 error reports agree: aborted, reporters paid
    uint8 public constant STATE_ABORTED = 6; // evicted, cancelled or 3 different results: refunded

    uint8 internal constant F_ERROR = 1; // disclosed the empty (error) result
    uint8 internal constant F_RELEASED = 2; // node freed (paid, slashed or cancelled)
    uint8 internal constant F_SLASHED = 4;
    uint8 internal constant F_ABSENT = 8; // missed the commit deadline while both partners committed

    uint256 internal constant SCORE_LIMIT = 50;

    struct Round {
        address node;
        uint8 commitPlace; // 1..3, 0 = not committed
        uint8 disclosePlace; // 1..3, 0 = not disclosed
        uint8 flags;
    }

    struct TaskInfo {
        // slot 0
        address creator;
        uint8 taskType;
        uint8 state;
        uint8 commitCount;
        uint8 discloseCount;
        uint8 resultRound;
        uint8 released;
        uint32 commitDeadline; // unix seconds
        uint16 discloseWindow; // deadline = commitDeadline + discloseWindow
        // slot 1
        uint96 fee;
        uint96 balance; // not yet paid out or refunded
        uint32 cap;
        uint32 vramLimit;
        // slot 2
        bytes32 taskHash;
        // slots 3..5
        Round[3] rounds;
        // slots 6..8: the commitments; a GPT result (32 bytes) replaces its commitment once disclosed
        bytes32[3] words;
    }

    struct Config {
        uint48 lastTaskId;
        uint32 timeout; // seconds from start to the deadline
        uint32 commitTimeout; // seconds from start to the commit deadline
        uint8 distanceThreshold; // SD: every 64-bit pHash must differ in fewer bits than this
        uint32 queued; // tasks in the queue
        uint32 sdOverheadMs;
        uint32 sdPerUnitMs;
        uint32 gptOverheadMs;
        uint32 gptPerUnitMs;
    }

    Config private config = Config({
        lastTaskId: 0,
        timeout: 15 minutes,
        commitTimeout: 10 minutes,
        distanceThreshold: 5,
        queued: 0,
        sdOverheadMs: 30_000,
        sdPerUnitMs: 20_000,
        gptOverheadMs: 30_000,
        gptPerUnitMs: 50
    });

    mapping(uint256 => TaskInfo) private tasks;
    mapping(uint256 => bytes32) private queuedDataHash;
    mapping(uint256 => mapping(uint256 => bytes)) private sdResults;

    INode public node;
    ITaskQueue public queue;
    INetworkStats public stats;

    /// Sum of the balances of all tasks that are not finished (escrowed fees).
    uint256 public totalEscrow;
    mapping(address => uint256) public owed;
    uint256 public totalOwed;
    /// Commitments whose (result, nonce) has been disclosed: a pair opens a commitment once, in one round of one
    /// task. Otherwise a node could copy a partner's commitment word from the chain and open it with the pair the
    /// partner discloses (paid without executing), or replay a pair disclosed in another task.
    mapping(bytes32 => bool) public commitmentUsed;

    bool private transient locked;

    event TaskQueued(
        uint256 indexed taskId,
        uint8 taskType,
        address indexed creator,
        bytes32 taskHash,
        bytes32 dataHash,
        uint256 vramLimit,
        uint256 cap,
        uint256 fee,
        uint256 value
    );
    event TaskStarted(
        uint256 indexed taskId,
        uint8 taskType,
        address indexed creator,
        address indexed selectedNode,
        bytes32 taskHash,
        bytes32 dataHash,
        uint8 round
    );
    event TaskCommitmentsReady(uint256 indexed taskId);
    event TaskErrorReported(uint256 indexed taskId, uint8 round);
    event TaskSuccess(uint256 indexed taskId, bytes result, address indexed resultNode);
    event TaskAborted(uint256 indexed taskId, string reason);
    event TaskResultUploaded(uint256 indexed taskId);
    event TaskNodeSuccess(uint256 indexed taskId, address indexed node, uint256 fee);
    event TaskNodeSlashed(uint256 indexed taskId, address indexed node);
    event TaskNodeCancelled(uint256 indexed taskId, address indexed node);
    event TaskNodeAbsent(uint256 indexed taskId, address indexed node, uint8 round);
    event TaskRefunded(uint256 indexed taskId, address indexed creator, uint256 amount);
    event PaymentDeferred(address indexed to, uint256 amount);
    event ConfigUpdated();

    error InvalidTaskType();
    error ZeroFee();
    error ZeroCap();
    error ZeroValue();
    error ValueTooLarge();
    error TaskNotFound();
    error IllegalTaskState(uint8 state);
    error InvalidRound();
    error NotSelectedNode();
    error AlreadyCommitted();
    error InvalidCommitment();
    error CommitmentsNotReady();
    error AlreadyDisclosed();
    error CommitmentMismatch();
    error InvalidResult();
    error NotResultNode();
    error DeadlineNotReached();
    error CommitDeadlinePassed();
    error Reentrancy();
    error NothingOwed();
    error TransferFailed();
    error InvalidConfig();
    error CommitmentReused();

    modifier nonReentrant() {
        if (locked) revert Reentrancy();
        locked = true;
        _;
        locked = false;
    }

    // ------------------------------------------------------------------ wiring and settings (owner)

    function setContracts(address node_, address queue_, address stats_) external onlyOwner {
        if (address(node) != address(0)) revert AlreadySet();
        if (node_ == address(0) || queue_ == address(0) || stats_ == address(0)) revert ZeroAddress();
        node = INode(node_);
        queue = ITaskQueue(queue_);
        stats = INetworkStats(stats_);
    }

    /// Commit deadline and deadline of later tasks, in seconds after the start:
    /// 0 < commitSeconds < totalSeconds, and totalSeconds - commitSeconds < 2^16 (the disclose window).
    function setTimeouts(uint256 commitSeconds, uint256 totalSeconds) external onlyOwner {
        if (
            commitSeconds == 0 || commitSeconds >= totalSeconds || totalSeconds > type(uint32).max
                || totalSeconds - commitSeconds > type(uint16).max
        ) revert InvalidConfig();
        config.commitTimeout = uint32(commitSeconds);
        config.timeout = uint32(totalSeconds);
        emit ConfigUpdated();
    }

    function setDistanceThreshold(uint256 threshold) external onlyOwner {
        if (threshold == 0 || threshold > 65) revert InvalidConfig();
        config.distanceThreshold = uint8(threshold);
        emit ConfigUpdated();
    }

    /// Estimated execution time of a task type: overheadMs + perUnitMs * cap. overheadMs must be > 0.
    function setTimeEstimate(uint8 taskType, uint256 overheadMs, uint256 perUnitMs) external onlyOwner {
        if (overheadMs == 0 || overheadMs > type(uint32).max || perUnitMs > type(uint32).max) revert InvalidConfig();
        if (taskType == TASK_TYPE_SD) {
            config.sdOverheadMs = uint32(overheadMs);
            config.sdPerUnitMs = uint32(perUnitMs);
        } else if (taskType == TASK_TYPE_GPT) {
            config.gptOverheadMs = uint32(overheadMs);
            config.gptPerUnitMs = uint32(perUnitMs);
        } else {
            revert InvalidTaskType();
        }
        emit ConfigUpdated();
    }

    // ------------------------------------------------------------------ application

    function createTask(uint8 taskType, bytes32 taskHash, bytes32 dataHash, uint256 vramLimit, uint256 cap)
        external
        payable
        nonReentrant
        returns (uint256 taskId)
    {
        if (taskType > TASK_TYPE_GPT) revert InvalidTaskType();
        if (msg.value == 0) revert ZeroFee();
        if (cap == 0) revert ZeroCap();
        if (msg.value > type(uint96).max || cap > type(uint32).max || vramLimit > type(uint32).max) {
            revert ValueTooLarge();
        }
        uint256 value = taskValue(taskType, msg.value, cap);
        if (value == 0) revert ZeroValue();
        taskId = uint256(config.lastTaskId) + 1;
        config.lastTaskId = uint48(taskId);

        TaskInfo storage t = tasks[taskId];
        t.creator = msg.sender;
        t.taskType = taskType;
        t.fee = uint96(msg.value);
        t.balance = uint96(msg.value);
        t.cap = uint32(cap);
        t.vramLimit = uint32(vramLimit);
        t.taskHash = taskHash;
        totalEscrow += msg.value;

        uint256 seed = uint256(keccak256(abi.encode(block.prevrandao, taskHash, taskId)));
        (bool ok, address[3] memory selected) = node.selectNodes(taskId, taskType, vramLimit, seed, address(0));
        if (ok) {
            _start(t, taskId, selected, dataHash);
            stats.updateTasks(1, 0, 1);
            return taskId;
        }
        t.state = STATE_QUEUED;
        queuedDataHash[taskId] = dataHash;
        uint256[] memory evicted = queue.push(taskId, taskType, vramLimit, value);
        config.queued = uint32(config.queued + 1 - evicted.length);
        emit TaskQueued(taskId, taskType, msg.sender, taskHash, dataHash, vramLimit, cap, msg.value, value);
        stats.updateTasks(1, 1 - int256(evicted.length), 0);
        for (uint256 i = 0; i < evicted.length; ++i) {
            _refundQueued(evicted[i], "evicted");
        }
    }

    // ------------------------------------------------------------------ nodes

    function submitCommitment(uint256 taskId, uint256 round, bytes32 commitment) external nonReentrant {
        TaskInfo storage t = tasks[taskId];
        uint8 state = t.state;
        if (state != STATE_RUNNING) {
            if (state == STATE_NONE) revert TaskNotFound();
            revert IllegalTaskState(state);
        }
        if (round > 2) revert InvalidRound();
        Round storage r = t.rounds[round];
        if (r.node != msg.sender) revert NotSelectedNode();
        if (r.commitPlace != 0) revert AlreadyCommitted();
        if (commitment == bytes32(0)) revert InvalidCommitment();
        if (commitmentUsed[commitment]) revert CommitmentReused();
        if (block.timestamp > t.commitDeadline) revert CommitDeadlinePassed();
        uint8 place = t.commitCount + 1;
        t.commitCount = place;
        r.commitPlace = place;
        t.words[round] = commitment;
        if (place == 3) emit TaskCommitmentsReady(taskId);
    }

    function disclose(uint256 taskId, uint256 round, bytes calldata result, bytes32 nonce) external nonReentrant {
        if (result.length == 0) revert InvalidResult();
        _disclose(taskId, round, result, nonce);
    }

    /// Discloses the error result: the node committed keccak256(abi.encodePacked(bytes(""), nonce)), i.e.
    /// keccak256(nonce), because the task cannot be executed (bad arguments, model cannot load, cap too low).
    function reportTaskError(uint256 taskId, uint256 round, bytes32 nonce) external nonReentrant {
        _disclose(taskId, round, "", nonce);
    }

    /// The result node has uploaded the result files to the relay: it is paid and freed.
    function reportResultsUploaded(uint256 taskId, uint256 round) external nonReentrant {
        TaskInfo storage t = tasks[taskId];
        uint8 state = t.state;
        if (state != STATE_SUCCESS) {
            if (state == STATE_NONE) revert TaskNotFound();
            revert IllegalTaskState(state);
        }
        if (round > 2) revert InvalidRound();
        if (t.rounds[round].node != msg.sender) revert NotSelectedNode();
        if (round != t.resultRound) revert NotResultNode();
        t.state = STATE_UPLOADED;
        emit TaskResultUploaded(taskId);
        _payResultNode(t, taskId, round);
    }

    /// Running task: after the deadline, by the creator or a selected node; the unpaid balance goes back to
    /// the creator and the nodes still bound to the task are freed (a node's QoS score is what it earned by its
    /// commit and disclose places, 0 if it submitted nothing; if nobody committed, nobody's QoS changes).
    /// Queued task: by its creator only, at any time; full refund.
    function cancelTask(uint256 taskId) external nonReentrant {
        TaskInfo storage t = tasks[taskId];
        uint8 state = t.state;
        if (state == STATE_NONE) revert TaskNotFound();
        if (state == STATE_QUEUED) {
            if (msg.sender != t.creator) revert Unauthorized();
            queue.remove(taskId);
            config.queued -= 1;
            stats.updateTasks(0, -1, 0);
            _refundQueued(taskId, "cancelled");
            return;
        }
        if (state == STATE_ABORTED || t.released == 3) revert IllegalTaskState(state);
        if (
            msg.sender != t.creator && msg.sender != t.rounds[0].node && msg.sender != t.rounds[1].node
                && msg.sender != t.rounds[2].node
        ) revert Unauthorized();
        uint256 commitCount = t.commitCount;
        // Before the deadline only a task that can no longer reach 2 commitments may be cancelled.
        if (
            block.timestamp <= _deadline(t)
                && (block.timestamp <= t.commitDeadline || commitCount >= 2 || state != STATE_RUNNING)
        ) revert DeadlineNotReached();
        if (state == STATE_RUNNING || state == STATE_SUCCESS) {
            t.state = STATE_ABORTED;
            emit TaskAborted(taskId, "cancelled");
        }
        bool record = commitCount > 0;
        _refundBalance(t, taskId);
        for (uint256 i = 0; i < 3; ++i) {
            Round memory r = t.rounds[i];
            if (r.flags & F_RELEASED != 0) continue;
            if (record && r.commitPlace == 0) {
                // someone could fetch the arguments and commit; this node did not
                t.rounds[i].flags = r.flags | F_ABSENT;
                emit TaskNodeAbsent(taskId, r.node, uint8(i));
                _release(t, taskId, i, 0, true, true);
            } else {
                emit TaskNodeCancelled(taskId, r.node);
                _release(t, taskId, i, _score(r.commitPlace, r.disclosePlace), record, false);
            }
        }
    }

    /// Claims payments that could not be pushed.
    function withdraw() external nonReentrant {
        uint256 amount = owed[msg.sender];
        if (amount == 0) revert NothingOwed();
        owed[msg.sender] = 0;
        totalOwed -= amount;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    /// Called by the Node contract when a node joins or resumes: it may start the best queued task it can run.
    function onNodeAvailable(address root, uint256 vram, uint256 groupAvailable, uint8 taskTypes) external {
        if (msg.sender != address(node)) revert Unauthorized();
        // A payment receiver re-entering Node while a Task call is under way: no dispatch in that case.
        if (locked) return;
        locked = true;
        _dispatch(root, vram, groupAvailable, taskTypes);
        locked = false;
    }

    // ------------------------------------------------------------------ views

    function taskValue(uint8 taskType, uint256 fee, uint256 cap) public view returns (uint256) {
        Config memory c = config;
        uint256 est = taskType == TASK_TYPE_SD
            ? uint256(c.sdOverheadMs) + uint256(c.sdPerUnitMs) * cap
            : uint256(c.gptOverheadMs) + uint256(c.gptPerUnitMs) * cap;
        return fee * 1000 / est;
    }

    function getTask(uint256 taskId)
        external
        view
        returns (
            address creator,
            uint8 taskType,
            uint8 state,
            bytes32 taskHash,
            uint256 vramLimit,
            uint256 cap,
            uint256 fee,
            uint256 balance,
            uint256 deadline,
            address[3] memory nodes,
            uint8 resultRound
        )
    {
        TaskInfo storage t = tasks[taskId];
        for (uint256 i = 0; i < 3; ++i) {
            nodes[i] = t.rounds[i].node;
        }
        return (
            t.creator,
            t.taskType,
            t.state,
            t.taskHash,
            t.vramLimit,
            t.cap,
            t.fee,
            t.balance,
            _deadline(t),
            nodes,
            t.resultRound
        );
    }

    /// The commit deadline and the deadline (unix seconds) of a started task; 0, 0 before it starts.
    function getTaskDeadlines(uint256 taskId) external view returns (uint256 commitDeadline, uint256 deadline) {
        TaskInfo storage t = tasks[taskId];
        if (t.commitDeadline == 0) return (0, 0);
        return (t.commitDeadline, _deadline(t));
    }

    /// commitPlace, disclosePlace (1..3, 0 = not yet) and flags (1 error, 2 released, 4 slashed, 8 absent) of a
    /// round.
    function getRound(uint256 taskId, uint256 round)
        external
        view
        returns (address node_, uint8 commitPlace, uint8 disclosePlace, uint8 flags, bytes32 commitment)
    {
        Round memory r = tasks[taskId].rounds[round];
        return (r.node, r.commitPlace, r.disclosePlace, r.flags, tasks[taskId].words[round]);
    }

    /// A round as `getTaskView` returns it (the same fields as `getRound`).
    struct RoundView {
        address node;
        uint8 commitPlace;
        uint8 disclosePlace;
        uint8 flags;
        bytes32 commitment;
    }

    /// What a node reads to move a task on, with the block it was read at.
    struct TaskView {
        uint256 blockNumber;
        uint256 timestamp;
        uint8 taskType;
        uint8 state;
        bytes32 taskHash;
        uint256 cap;
        uint8 resultRound;
        uint256 commitDeadline;
        uint256 deadline;
        RoundView[3] rounds;
    }

    /// A task's state, deadlines and rounds together with the block number and timestamp they were read at:
    /// one call gives a consistent view (several calls would need a block number first, then one call each).
    function getTaskView(uint256 taskId) external view returns (TaskView memory v) {
        TaskInfo storage t = tasks[taskId];
        v.blockNumber = block.number;
        v.timestamp = block.timestamp;
        v.taskType = t.taskType;
        v.state = t.state;
        v.taskHash = t.taskHash;
        v.cap = t.cap;
        v.resultRound = t.resultRound;
        if (t.commitDeadline != 0) {
            v.commitDeadline = t.commitDeadline;
            v.deadline = _deadline(t);
        }
        for (uint256 i = 0; i < 3; ++i) {
            Round memory r = t.rounds[i];
            v.rounds[i] = RoundView(r.node, r.commitPlace, r.disclosePlace, r.flags, t.words[i]);
        }
    }

    /// The agreed result (SUCCESS / UPLOADED), empty otherwise.
    function getTaskResult(uint256 taskId) external view returns (bytes memory) {
        TaskInfo storage t = tasks[taskId];
        if (t.state != STATE_SUCCESS && t.state != STATE_UPLOADED) return "";
        return _storedResult(t, taskId, t.resultRound);
    }

    function getConfig()
        external
        view
        returns (
            uint256 timeout,
            uint256 commitTimeout,
            uint256 distanceThreshold,
            uint256 sdOverheadMs,
            uint256 sdPerUnitMs,
            uint256 gptOverheadMs,
            uint256 gptPerUnitMs
        )
    {
        Config memory c = config;
        return (c.timeout, c.commitTimeout, c.distanceThreshold, c.sdOverheadMs, c.sdPerUnitMs, c.gptOverheadMs, c.gptPerUnitMs);
    }

    function totalTasks() external view returns (uint256) {
        return config.lastTaskId;
    }

    function queuedTasks() external view returns (uint256) {
        return config.queued;
    }

    // ------------------------------------------------------------------ internals

    function _start(TaskInfo storage t, uint256 taskId, address[3] memory selected, bytes32 dataHash) private {
        t.state = STATE_RUNNING;
        Config memory c = config;
        uint256 commitDeadline = block.timestamp + c.commitTimeout;
        t.commitDeadline = uint32(commitDeadline); // unix seconds fit until 2106
        t.discloseWindow = uint16(c.timeout - c.commitTimeout);
        address creator = t.creator;
        uint8 taskType = t.taskType;
        bytes32 taskHash = t.taskHash;
        for (uint256 i = 0; i < 3; ++i) {
            t.rounds[i].node = selected[i];
            emit TaskStarted(taskId, taskType, creator, selected[i], taskHash, dataHash, uint8(i));
        }
    }

    function _dispatch(address root, uint256 vram, uint256 groupAvailable, uint8 taskTypes) private {
        if (config.queued == 0) return;
        uint256 taskId = queue.peekBest(vram, groupAvailable, taskTypes);
        if (taskId == 0) return;
        TaskInfo storage t = tasks[taskId];
        uint256 seed = uint256(keccak256(abi.encode(block.prevrandao, t.taskHash, taskId)));
        (bool ok, address[3] memory selected) = node.selectNodes(taskId, t.taskType, t.vramLimit, seed, root);
        if (!ok) return;
        queue.remove(taskId);
        config.queued -= 1;
        bytes32 dataHash = queuedDataHash[taskId];
        delete queuedDataHash[taskId];
        _start(t, taskId, selected, dataHash);
        stats.updateTasks(0, -1, 1);
    }

    function _disclose(uint256 taskId, uint256 round, bytes memory result, bytes32 nonce) private {
        TaskInfo storage t = tasks[taskId];
        uint8 state = t.state;
        if (state < STATE_RUNNING || state == STATE_ABORTED) {
            if (state == STATE_NONE) revert TaskNotFound();
            revert IllegalTaskState(state);
        }
        if (round > 2) revert InvalidRound();
        Round memory r = t.rounds[round];
        if (r.node != msg.sender) revert NotSelectedNode();
        uint8 commitCount = t.commitCount;
        // 3 commitments, or 2 once the commit deadline has passed (the third node is absent)
        if (commitCount < 2 || (commitCount == 2 && block.timestamp <= t.commitDeadline)) {
            revert CommitmentsNotReady();
        }
        if (r.disclosePlace != 0) revert AlreadyDisclosed();
        {
            bytes32 opened = keccak256(abi.encodePacked(result, nonce));
            if (opened != t.words[round]) revert CommitmentMismatch();
            if (commitmentUsed[opened]) revert CommitmentReused();
            commitmentUsed[opened] = true;
        }
        bool isError = result.length == 0;
        if (!isError && (t.taskType == TASK_TYPE_GPT ? result.length != 32 : result.length % 8 != 0)) {
            revert InvalidResult();
        }
        uint8 place = t.discloseCount + 1;
        t.discloseCount = place;
        r.disclosePlace = place;
        if (isError) {
            r.flags |= F_ERROR;
            emit TaskErrorReported(taskId, uint8(round));
        }
        t.rounds[round] = r;
        if (place < 3 && !isError) {
            if (t.taskType == TASK_TYPE_GPT) t.words[round] = bytes32(result);
            else sdResults[taskId][round] = result;
        }
        if (commitCount == 2 && place == 1) _settleAbsent(t, taskId);
        if (place == 1) return;

        if (place == 2) {
            uint256 first = _roundByDisclosePlace(t, 1);
            if (_same(t, taskId, first, result)) {
                _agree(t, taskId, first, round, 3 - first - round);
            } else if (commitCount == 2) {
                // two results that disagree and no third to decide: nobody can be blamed
                t.state = STATE_ABORTED;
                emit TaskAborted(taskId, "results mismatch");
                _refundBalance(t, taskId);
                for (uint256 i = 0; i < 3; ++i) {
                    Round memory x = t.rounds[i];
                    if (x.flags & F_RELEASED != 0) continue;
                    emit TaskNodeCancelled(taskId, x.node);
                    _release(t, taskId, i, _score(x.commitPlace, x.disclosePlace), true, false);
                }
            }
            return;
        }
        // place == 3
        if (state == STATE_RUNNING) {
            // the first two disagreed
            uint256 d0 = _roundByDisclosePlace(t, 1);
            uint256 d1 = 3 - d0 - round;
            if (_same(t, taskId, d0, result)) {
                _agree(t, taskId, d0, round, d1);
                _slash(t, taskId, d1);
            } else if (_same(t, taskId, d1, result)) {
                _agree(t, taskId, d1, round, d0);
                _slash(t, taskId, d0);
            } else {
                t.state = STATE_ABORTED;
                emit TaskAborted(taskId, "results mismatch");
                _refundBalance(t, taskId);
                for (uint256 i = 0; i < 3; ++i) {
                    Round memory x = t.rounds[i];
                    emit TaskNodeCancelled(taskId, x.node);
                    _release(t, taskId, i, _score(x.commitPlace, x.disclosePlace), true, false);
                }
            }
        } else {
            // the outcome is known (SUCCESS, UPLOADED or ERROR): compare with the result round
            if (_same(t, taskId, t.resultRound, result)) _paySettled(t, taskId, round);
            else _slash(t, taskId, round);
        }
    }

    /// Rounds a (the first discloser of the pair: result node) and b agree; c is the remaining round.
    function _agree(TaskInfo storage t, uint256 taskId, uint256 a, uint256 b, uint256 c) private {
        t.resultRound = uint8(a);
        if (t.rounds[a].flags & F_ERROR != 0) {
            t.state = STATE_ERROR;
            emit TaskAborted(taskId, "task error");
            _paySettled(t, taskId, b);
            _payResultNode(t, taskId, a);
        } else {
            t.state = STATE_SUCCESS;
            emit TaskSuccess(taskId, _storedResult(t, taskId, a), t.rounds[a].node);
            _paySettled(t, taskId, b);
        }
        c; // the remaining round is settled when it discloses, or at cancel
    }

    /// Pays an agreeing (non-result) node its share and frees it.
    function _paySettled(TaskInfo storage t, uint256 taskId, uint256 round) private {
        Round memory r = t.rounds[round];
        uint256 score = _score(r.commitPlace, r.disclosePlace);
        uint256 amount = uint256(t.fee) * score / SCORE_LIMIT;
        t.balance -= uint96(amount);
        totalEscrow -= amount;
        emit TaskNodeSuccess(taskId, r.node, amount);
        _release(t, taskId, round, score, true, false);
        _send(r.node, amount);
    }

    /// Pays the result node: fee minus the shares of the two other rounds (an undisclosed round counts as
    /// disclosing 3rd, an absent one as 3rd in both: that share is reserved and goes to it or back to the
    /// creator).
    function _payResultNode(TaskInfo storage t, uint256 taskId, uint256 round) private {
        uint256 fee = t.fee;
        uint256 amount = fee;
        for (uint256 i = 0; i < 3; ++i) {
            if (i == round) continue;
            Round memory x = t.rounds[i];
            amount -= fee * _reservedScore(x) / SCORE_LIMIT;
        }
        Round memory r = t.rounds[round];
        t.balance -= uint96(amount);
        totalEscrow -= amount;
        emit TaskNodeSuccess(taskId, r.node, amount);
        _release(t, taskId, round, _score(r.commitPlace, r.disclosePlace), true, false);
        _send(r.node, amount);
    }

    /// Slashes a disagreeing node: its share goes back to the creator, its stake to the treasury.
    function _slash(TaskInfo storage t, uint256 taskId, uint256 round) private {
        Round storage r = t.rounds[round];
        address n = r.node;
        uint256 amount = uint256(t.fee) * _score(r.commitPlace, r.disclosePlace) / SCORE_LIMIT;
        r.flags |= F_RELEASED | F_SLASHED;
        t.balance -= uint96(amount);
        totalEscrow -= amount;
        emit TaskNodeSlashed(taskId, n);
        _noteReleased(t);
        node.slash(n);
        address creator = t.creator;
        emit TaskRefunded(taskId, creator, amount);
        _send(creator, amount);
    }

    function _release(TaskInfo storage t, uint256 taskId, uint256 round, uint256 score, bool record, bool absent)
        private
    {
        Round storage r = t.rounds[round];
        address n = r.node;
        r.flags |= F_RELEASED;
        _noteReleased(t);
        (bool available, uint256 vram, uint256 groupAvailable, uint8 taskTypes) =
            node.finishTask(n, score, record, absent);
        if (available) _dispatch(n, vram, groupAvailable, taskTypes);
        taskId;
    }

    /// The first disclosure of a task with 2 commitments: the round that never committed is absent. Its
    /// reserved share goes back to the creator; it scores 0, is penalized and paused.
    function _settleAbsent(TaskInfo storage t, uint256 taskId) private {
        uint256 round = t.rounds[0].commitPlace == 0 ? 0 : (t.rounds[1].commitPlace == 0 ? 1 : 2);
        Round storage r = t.rounds[round];
        r.flags |= F_ABSENT;
        address n = r.node;
        emit TaskNodeAbsent(taskId, n, uint8(round));
        uint256 amount = uint256(t.fee) * _reservedScore(r) / SCORE_LIMIT;
        t.balance -= uint96(amount);
        totalEscrow -= amount;
        address creator = t.creator;
        emit TaskRefunded(taskId, creator, amount);
        _release(t, taskId, round, 0, true, true);
        _send(creator, amount);
    }

    function _deadline(TaskInfo storage t) private view returns (uint256) {
        return uint256(t.commitDeadline) + t.discloseWindow;
    }

    /// The score a round's share is reserved at before it is settled: missing places count as 3rd.
    function _reservedScore(Round memory r) private pure returns (uint256) {
        return _score(r.commitPlace == 0 ? 3 : r.commitPlace, r.disclosePlace == 0 ? 3 : r.disclosePlace);
    }

    function _noteReleased(TaskInfo storage t) private {
        uint8 released = t.released + 1;
        t.released = released;
        if (released == 3) stats.updateTasks(0, 0, -1);
    }

    function _refundBalance(TaskInfo storage t, uint256 taskId) private {
        uint256 amount = t.balance;
        if (amount == 0) return;
        t.balance = 0;
        totalEscrow -= amount;
        address creator = t.creator;
        emit TaskRefunded(taskId, creator, amount);
        _send(creator, amount);
    }

    function _refundQueued(uint256 taskId, string memory reason) private {
        TaskInfo storage t = tasks[taskId];
        t.state = STATE_ABORTED;
        delete queuedDataHash[taskId];
        emit TaskAborted(taskId, reason);
        _refundBalance(t, taskId);
    }

    function _roundByDisclosePlace(TaskInfo storage t, uint8 place) private view returns (uint256) {
        if (t.rounds[0].disclosePlace == place) return 0;
        if (t.rounds[1].disclosePlace == place) return 1;
        return 2;
    }

    function _storedResult(TaskInfo storage t, uint256 taskId, uint256 round) private view returns (bytes memory) {
        if (t.rounds[round].flags & F_ERROR != 0) return "";
        if (t.taskType == TASK_TYPE_GPT) return abi.encodePacked(t.words[round]);
        return sdResults[taskId][round];
    }

    /// Whether `result` agrees with the stored result of `round`. Two error (empty) results agree; an error
    /// never agrees with a real result. GPT: equal; SD: equal length and every 8-byte pHash within distance.
    function _same(TaskInfo storage t, uint256 taskId, uint256 round, bytes memory result) private view returns (bool) {
        bool storedError = t.rounds[round].flags & F_ERROR != 0;
        if (storedError || result.length == 0) return storedError && result.length == 0;
        if (t.taskType == TASK_TYPE_GPT) return t.words[round] == bytes32(result);
        return _hammingMatch(sdResults[taskId][round], result, config.distanceThreshold);
    }

    function _hammingMatch(bytes memory a, bytes memory b, uint256 threshold) internal pure returns (bool) {
        uint256 len = a.length;
        if (len != b.length) return false;
        for (uint256 off = 0; off < len; off += 8) {
            uint256 x;
            uint256 y;
            assembly ("memory-safe") {
                x := shr(192, mload(add(add(a, 32), off)))
                y := shr(192, mload(add(add(b, 32), off)))
            }
            if (_popcount64(x ^ y) >= threshold) return false;
        }
        return true;
    }

    function _popcount64(uint256 x) internal pure returns (uint256) {
        unchecked {
            x = x - ((x >> 1) & 0x5555555555555555);
            x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333);
            x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0f;
            return ((x * 0x0101010101010101) >> 56) & 0xff;
        }
    }

    function _score(uint8 commitPlace, uint8 disclosePlace) private pure returns (uint256) {
        return _placeScore(commitPlace) + _placeScore(disclosePlace);
    }

    /// Place scores [10, 9, 6] for places 1, 2, 3; 0 for no place.
    function _placeScore(uint8 place) private pure returns (uint256) {
        if (place == 1) return 10;
        if (place == 2) return 9;
        if (place == 3) return 6;
        return 0;
    }

    function _send(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount, gas: 50_000}("");
        if (!ok) {
            owed[to] += amount;
            totalOwed += amount;
            emit PaymentDeferred(to, amount);
        }
    }
}
