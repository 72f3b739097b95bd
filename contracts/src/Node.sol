// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "./Ownable.sol";
import {INode, ITask, IQOS, INetworkStats} from "./Interfaces.sol";

/// @title Node registry: staking, status, card groups and weighted random selection.
/// @notice Group key = keccak256(abi.encode(string gpuName, uint256 gpuVram, string runtimeId, uint8 taskTypes))
/// (standard ABI encoding, not packed, so that no two different tuples share a key). `taskTypes` is the set of task
/// types the node runs, one bit per type (bit 0 = SD, bit 1 = GPT): a node without an image engine declares GPT
/// only and is never selected for an SD task it would miss. Only AVAILABLE nodes are indexed, per
/// group, in an array with O(1) add/remove (swap and pop); the groups that have at least one available node are
/// kept in a list with O(1) add/remove. Selection walks that list of groups (at most `maxGroups`, not the
/// number of nodes) and then samples inside a group by rejection sampling on the
/// QoS weight, so no hot path loops over nodes.
contract Node is Ownable, INode {
    uint8 public constant QUIT = 0;
    uint8 public constant AVAILABLE = 1;
    uint8 public constant BUSY = 2;
    uint8 public constant PENDING_PAUSE = 3;
    uint8 public constant PENDING_QUIT = 4;
    uint8 public constant PAUSED = 5;

    uint8 internal constant TASK_TYPE_SD = 0;
    uint8 internal constant TASK_TYPE_GPT = 1;
    /// `taskTypes` bits of join: 1 << taskType.
    uint8 public constant TASK_TYPES_SD = 1;
    uint8 public constant TASK_TYPES_GPT = 2;
    uint8 internal constant TASK_TYPES_ALL = 3;
    /// Upper bound of a selection weight (the best task score); rejection sampling accepts with weight / 20.
    uint256 internal constant MAX_WEIGHT = 20;
    /// Rejection sampling gives up after this many draws and takes the last candidate.
    uint256 internal constant MAX_DRAWS = 32;

    struct NodeInfo {
        uint8 status;
        uint8 weight; // cached QoS selection weight, 1..20
        uint32 slot; // index + 1 in its group's available list, 0 when not available
        uint64 vram;
        uint96 stake; // what the node paid when it joined (returned on quit / kick-out)
        uint48 taskId; // the task the node is bound to while BUSY / PENDING_*
    }

    struct Group {
        uint64 vram;
        uint32 count; // available nodes
        uint32 activeSlot; // index + 1 in activeGroups, 0 when the group has no available node
        uint64 weightSum; // sum of the weights of its available nodes
        uint32 joined; // nodes of the group that have not quit (any status)
        uint8 taskTypes; // 1 << taskType for each task type the group's nodes run
    }

    mapping(address => NodeInfo) private nodes;
    /// The group key of a node (kept after it quits, overwritten when it joins again).
    mapping(address => bytes32) public nodeGroup;
    mapping(bytes32 => Group) private groups;
    mapping(bytes32 => mapping(uint256 => address)) private members;
    bytes32[] private activeGroups;

    uint256 public stakeAmount = 400 ether;
    /// Most groups (gpuName, gpuVram, runtimeId) with joined nodes: selection walks the groups that have an
    /// available node, so this bounds the gas of createTask.
    uint256 public maxGroups = 64;
    /// Groups with at least one joined node.
    uint256 public groupCount;
    /// Taken from the stake of a node that misses a task's commit deadline (sent to the treasury).
    uint256 public absencePenalty = 40 ether;
    address public treasury;
    /// Sum of the stakes of all joined nodes.
    uint256 public totalStaked;
    /// Payments that could not be pushed (the receiver reverted); claim with withdraw().
    mapping(address => uint256) public owed;
    uint256 public totalOwed;

    ITask public taskContract;
    IQOS public qos;
    INetworkStats public stats;

    event NodeJoined(
        address indexed node,
        bytes32 indexed groupKey,
        string gpuName,
        uint256 gpuVram,
        string runtimeId,
        uint8 taskTypes,
        uint256 stake
    );
    event NodeStatusChanged(address indexed node, uint8 status);
    event NodeQuit(address indexed node, uint256 stakeReturned);
    event NodeKickedOut(address indexed node);
    event NodeSlashed(address indexed node, uint256 stake, address treasury);
    event NodePenalized(address indexed node, uint256 amount, address treasury);
    event AbsencePenaltyUpdated(uint256 amount);
    event MaxGroupsUpdated(uint256 maxGroups);
    event StakeAmountUpdated(uint256 amount);
    event TreasuryUpdated(address treasury);
    event PaymentDeferred(address indexed to, uint256 amount);

    error IllegalNodeStatus(uint8 status);
    error NodeAlreadyJoined();
    error WrongStakeAmount(uint256 expected, uint256 sent);
    error InvalidGpu();
    error NothingOwed();
    error TransferFailed();
    error ValueTooLarge();
    error TooManyGroups(uint256 maxGroups);
    error InvalidTaskTypes(uint8 taskTypes);

    constructor() {
        treasury = msg.sender;
    }

    modifier onlyTask() {
        if (msg.sender != address(taskContract)) revert Unauthorized();
        _;
    }

    // ------------------------------------------------------------------ wiring and settings (owner)

    function setContracts(address task_, address qos_, address stats_) external onlyOwner {
        if (address(taskContract) != address(0)) revert AlreadySet();
        if (task_ == address(0) || qos_ == address(0) || stats_ == address(0)) revert ZeroAddress();
        taskContract = ITask(task_);
        qos = IQOS(qos_);
        stats = INetworkStats(stats_);
    }

    /// The stake required from later joins; nodes already joined keep (and get back) what they paid.
    function setStakeAmount(uint256 amount) external onlyOwner {
        if (amount == 0 || amount > type(uint96).max) revert ValueTooLarge();
        stakeAmount = amount;
        emit StakeAmountUpdated(amount);
    }

    /// The part of its stake a node loses when it misses a commit deadline (0 disables the penalty; it is
    /// still paused and scores 0).
    function setAbsencePenalty(uint256 amount) external onlyOwner {
        if (amount > type(uint96).max) revert ValueTooLarge();
        absencePenalty = amount;
        emit AbsencePenaltyUpdated(amount);
    }

    /// Later joins that would open a new group beyond this many are refused (existing groups are kept).
    function setMaxGroups(uint256 maxGroups_) external onlyOwner {
        if (maxGroups_ == 0) revert ValueTooLarge();
        maxGroups = maxGroups_;
        emit MaxGroupsUpdated(maxGroups_);
    }

    function setTreasury(address treasury_) external onlyOwner {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryUpdated(treasury_);
    }

    // ------------------------------------------------------------------ node actions

    /// Joins with the stake. `taskTypes`: the task types this node runs (TASK_TYPES_SD | TASK_TYPES_GPT).
    function join(string calldata gpuName, uint256 gpuVram, string calldata runtimeId, uint8 taskTypes)
        external
        payable
    {
        NodeInfo storage n = nodes[msg.sender];
        if (n.status != QUIT) revert NodeAlreadyJoined();
        if (msg.value != stakeAmount) revert WrongStakeAmount(stakeAmount, msg.value);
        if (bytes(gpuName).length == 0 || bytes(runtimeId).length == 0 || gpuVram == 0 || gpuVram > type(uint64).max) {
            revert InvalidGpu();
        }
        if (taskTypes == 0 || taskTypes > TASK_TYPES_ALL) revert InvalidTaskTypes(taskTypes);
        bytes32 key = keccak256(abi.encode(gpuName, gpuVram, runtimeId, taskTypes));
        if (nodeGroup[msg.sender] != key) nodeGroup[msg.sender] = key;
        Group storage g = groups[key];
        if (g.vram == 0) {
            g.vram = uint64(gpuVram);
            g.taskTypes = taskTypes;
        }
        if (g.joined == 0) {
            if (groupCount >= maxGroups) revert TooManyGroups(maxGroups);
            groupCount += 1;
        }
        g.joined += 1;
        uint256 w = qos.weightOf(msg.sender);
        n.status = AVAILABLE;
        n.weight = uint8(w);
        n.vram = uint64(gpuVram);
        n.stake = uint96(msg.value);
        n.taskId = 0;
        totalStaked += msg.value;
        _addAvailable(msg.sender, key, w);
        stats.updateNodes(1, 1, 0);
        emit NodeJoined(msg.sender, key, gpuName, gpuVram, runtimeId, taskTypes, msg.value);
        taskContract.onNodeAvailable(msg.sender, gpuVram, groups[key].count, taskTypes);
    }

    /// AVAILABLE -> PAUSED; BUSY -> PENDING_PAUSE (PAUSED when its task ends).
    function pause() external {
        NodeInfo storage n = nodes[msg.sender];
        uint8 s = n.status;
        if (s == AVAILABLE) {
            _removeAvailable(msg.sender, nodeGroup[msg.sender], n.weight, n.slot);
            n.status = PAUSED;
            stats.updateNodes(0, -1, 0);
            emit NodeStatusChanged(msg.sender, PAUSED);
        } else if (s == BUSY) {
            n.status = PENDING_PAUSE;
            emit NodeStatusChanged(msg.sender, PENDING_PAUSE);
        } else {
            revert IllegalNodeStatus(s);
        }
    }

    /// PAUSED -> AVAILABLE (may start a queued task at once).
    function resume() external {
        NodeInfo storage n = nodes[msg.sender];
        uint8 s = n.status;
        if (s != PAUSED) revert IllegalNodeStatus(s);
        bytes32 key = nodeGroup[msg.sender];
        n.status = AVAILABLE;
        _addAvailable(msg.sender, key, n.weight);
        stats.updateNodes(0, 1, 0);
        emit NodeStatusChanged(msg.sender, AVAILABLE);
        taskContract.onNodeAvailable(msg.sender, n.vram, groups[key].count, groups[key].taskTypes);
    }

    /// AVAILABLE or PAUSED: leave and get the stake back; BUSY -> PENDING_QUIT (leaves when its task ends).
    function quit() external {
        NodeInfo storage n = nodes[msg.sender];
        uint8 s = n.status;
        if (s == AVAILABLE) {
            _removeAvailable(msg.sender, nodeGroup[msg.sender], n.weight, n.slot);
            stats.updateNodes(-1, -1, 0);
            _leave(msg.sender);
        } else if (s == PAUSED) {
            stats.updateNodes(-1, 0, 0);
            _leave(msg.sender);
        } else if (s == BUSY) {
            n.status = PENDING_QUIT;
            emit NodeStatusChanged(msg.sender, PENDING_QUIT);
        } else {
            revert IllegalNodeStatus(s);
        }
    }

    /// Claims payments that could not be pushed.
    function withdraw() external {
        uint256 amount = owed[msg.sender];
        if (amount == 0) revert NothingOwed();
        owed[msg.sender] = 0;
        totalOwed -= amount;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    // ------------------------------------------------------------------ Task contract callbacks

    function selectNodes(uint256 taskId, uint8 taskType, uint256 vramLimit, uint256 seed, address root)
        external
        onlyTask
        returns (bool ok, address[3] memory selected)
    {
        if (taskType == TASK_TYPE_GPT) ok = _selectGpt(taskId, vramLimit, seed, root, selected);
        else ok = _selectSd(taskId, vramLimit, seed, root, selected);
        if (ok) stats.updateNodes(0, -3, 3);
    }

    function finishTask(address node, uint256 score, bool record, bool absent)
        external
        onlyTask
        returns (bool available, uint256 vram, uint256 groupAvailable, uint8 taskTypes)
    {
        NodeInfo storage n = nodes[node];
        uint8 s = n.status;
        if (s != BUSY && s != PENDING_PAUSE && s != PENDING_QUIT) revert IllegalNodeStatus(s);
        if (absent) _penalize(node, n);
        uint256 w = n.weight;
        bool kick;
        if (record) (kick, w) = qos.recordTask(node, score);
        if (n.stake == 0) kick = true; // penalties took the whole stake
        if (kick) {
            qos.resetRecent(node);
            stats.updateNodes(-1, 0, -1);
            emit NodeKickedOut(node);
            _leave(node);
            return (false, 0, 0, 0);
        }
        n.taskId = 0;
        n.weight = uint8(w);
        if (s == BUSY && !absent) {
            bytes32 key = nodeGroup[node];
            n.status = AVAILABLE;
            _addAvailable(node, key, w);
            stats.updateNodes(0, 1, -1);
            return (true, n.vram, groups[key].count, groups[key].taskTypes);
        }
        if (s != PENDING_QUIT) {
            // an absent node is evidently not running: it is not selected again until it resumes
            n.status = PAUSED;
            stats.updateNodes(0, 0, -1);
            emit NodeStatusChanged(node, PAUSED);
            return (false, 0, 0, 0);
        }
        stats.updateNodes(-1, 0, -1);
        _leave(node);
        return (false, 0, 0, 0);
    }

    function slash(address node) external onlyTask {
        NodeInfo storage n = nodes[node];
        uint8 s = n.status;
        if (s != BUSY && s != PENDING_PAUSE && s != PENDING_QUIT) revert IllegalNodeStatus(s);
        uint256 amount = n.stake;
        qos.recordTask(node, 0);
        qos.resetRecent(node);
        totalStaked -= amount;
        delete nodes[node];
        _unjoin(node);
        stats.updateNodes(-1, 0, -1);
        address to = treasury;
        emit NodeSlashed(node, amount, to);
        _send(to, amount);
    }

    // ------------------------------------------------------------------ views

    function getNodeInfo(address node)
        external
        view
        returns (
            uint8 status,
            bytes32 groupKey,
            uint256 gpuVram,
            uint256 stake,
            uint256 weight,
            uint256 taskId,
            uint8 taskTypes
        )
    {
        NodeInfo memory n = nodes[node];
        bytes32 key = n.status == QUIT ? bytes32(0) : nodeGroup[node];
        return (n.status, key, n.vram, n.stake, n.weight, n.taskId, groups[key].taskTypes);
    }

    function getNodeStatus(address node) external view returns (uint8) {
        return nodes[node].status;
    }

    function getNodeTask(address node) external view returns (uint256) {
        return nodes[node].taskId;
    }

    function groupAvailableCount(bytes32 key) external view returns (uint256) {
        return groups[key].count;
    }

    /// A group's card memory, its available and joined node counts, and the task types it runs.
    function getGroupInfo(bytes32 key)
        external
        view
        returns (uint256 gpuVram, uint256 available, uint256 joined, uint8 taskTypes)
    {
        Group storage g = groups[key];
        return (g.vram, g.count, g.joined, g.taskTypes);
    }

    function getGroupAvailableNodes(bytes32 key) external view returns (address[] memory list) {
        uint256 c = groups[key].count;
        list = new address[](c);
        for (uint256 i = 0; i < c; ++i) {
            list[i] = members[key][i];
        }
    }

    /// Groups with at least one available node.
    function getActiveGroups() external view returns (bytes32[] memory) {
        return activeGroups;
    }

    /// Available nodes that run `taskType` with gpuVram >= vram.
    function availableAtLeast(uint8 taskType, uint256 vram) external view returns (uint256 total) {
        uint256 len = activeGroups.length;
        uint8 bit = uint8(1 << taskType);
        for (uint256 i = 0; i < len; ++i) {
            Group storage g = groups[activeGroups[i]];
            if (g.vram >= vram && g.taskTypes & bit != 0) total += g.count;
        }
    }

    // ------------------------------------------------------------------ selection

    function _selectGpt(uint256 taskId, uint256 vramLimit, uint256 seed, address root, address[3] memory selected)
        private
        returns (bool)
    {
        bytes32 key;
        uint256 draw;
        if (root != address(0)) {
            key = nodeGroup[root];
            Group storage rg = groups[key];
            if (rg.count < 3 || rg.vram < vramLimit || rg.taskTypes & TASK_TYPES_GPT == 0) return false;
            selected[0] = root;
            _take(root, key, taskId);
            draw = 1;
        } else {
            uint256 len = activeGroups.length;
            uint256[] memory weights = new uint256[](len);
            uint256 total;
            for (uint256 i = 0; i < len; ++i) {
                Group storage g = groups[activeGroups[i]];
                if (g.count >= 3 && g.vram >= vramLimit && g.taskTypes & TASK_TYPES_GPT != 0) {
                    weights[i] = g.weightSum;
                    total += g.weightSum;
                }
            }
            if (total == 0) return false;
            key = activeGroups[_pickIndex(weights, _rand(seed, 100))];
        }
        for (uint256 k = draw; k < 3; ++k) {
            address picked = _pickInGroup(key, seed, k);
            selected[k] = picked;
            _take(picked, key, taskId);
        }
        return true;
    }

    function _selectSd(uint256 taskId, uint256 vramLimit, uint256 seed, address root, address[3] memory selected)
        private
        returns (bool)
    {
        (bytes32[] memory keys, uint256[] memory weights, uint256 eligible, uint256 rootIndex) =
            _eligibleGroups(vramLimit, root);
        if (eligible < 3) return false;
        uint256 k;
        if (root != address(0)) {
            if (rootIndex == type(uint256).max) return false;
            selected[0] = root;
            weights[rootIndex] -= nodes[root].weight;
            _take(root, keys[rootIndex], taskId);
            k = 1;
        }
        for (; k < 3; ++k) {
            uint256 gi = _pickIndex(weights, _rand(seed, 100 + k));
            address picked = _pickInGroup(keys[gi], seed, k);
            selected[k] = picked;
            weights[gi] -= nodes[picked].weight;
            _take(picked, keys[gi], taskId);
        }
        return true;
    }

    /// The groups that run SD with gpuVram >= vramLimit (zero weight for the others), their available count, and the index
    /// of `root`'s group (max if none).
    function _eligibleGroups(uint256 vramLimit, address root)
        private
        view
        returns (bytes32[] memory keys, uint256[] memory weights, uint256 eligible, uint256 rootIndex)
    {
        uint256 len = activeGroups.length;
        keys = new bytes32[](len);
        weights = new uint256[](len);
        rootIndex = type(uint256).max;
        bytes32 rootKey = root == address(0) ? bytes32(0) : nodeGroup[root];
        for (uint256 i = 0; i < len; ++i) {
            bytes32 key = activeGroups[i];
            Group storage g = groups[key];
            if (g.vram >= vramLimit && g.taskTypes & TASK_TYPES_SD != 0) {
                keys[i] = key;
                weights[i] = g.weightSum;
                eligible += g.count;
                if (key == rootKey) rootIndex = i;
            }
        }
    }

    /// Weighted pick among the available nodes of a group: draw a member uniformly, accept it with
    /// probability weight / 20, at most MAX_DRAWS draws (then the last draw is taken).
    function _pickInGroup(bytes32 key, uint256 seed, uint256 k) private view returns (address cand) {
        uint256 count = groups[key].count;
        for (uint256 t = 0; t < MAX_DRAWS; ++t) {
            uint256 r = _rand(seed, (k << 8) | t);
            cand = members[key][r % count];
            if ((r >> 128) % MAX_WEIGHT < nodes[cand].weight) return cand;
        }
    }

    /// Index i with probability weights[i] / sum(weights); the sum must be > 0.
    function _pickIndex(uint256[] memory weights, uint256 r) private pure returns (uint256 i) {
        uint256 total;
        uint256 len = weights.length;
        for (i = 0; i < len; ++i) {
            total += weights[i];
        }
        uint256 x = r % total;
        for (i = 0; i < len; ++i) {
            uint256 w = weights[i];
            if (x < w) return i;
            x -= w;
        }
        revert(); // unreachable
    }

    function _rand(uint256 seed, uint256 i) private pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, i)));
    }

    function _take(address node, bytes32 key, uint256 taskId) private {
        NodeInfo storage n = nodes[node];
        _removeAvailable(node, key, n.weight, n.slot);
        n.status = BUSY;
        n.taskId = uint48(taskId);
    }

    // ------------------------------------------------------------------ availability index

    function _addAvailable(address node, bytes32 key, uint256 weight) private {
        Group storage g = groups[key];
        uint32 c = g.count;
        members[key][c] = node;
        nodes[node].slot = c + 1;
        g.count = c + 1;
        g.weightSum += uint64(weight);
        if (c == 0) {
            activeGroups.push(key);
            g.activeSlot = uint32(activeGroups.length);
        }
    }

    function _removeAvailable(address node, bytes32 key, uint256 weight, uint32 slot) private {
        Group storage g = groups[key];
        uint32 last = g.count - 1;
        uint32 idx = slot - 1;
        if (idx != last) {
            address moved = members[key][last];
            members[key][idx] = moved;
            nodes[moved].slot = idx + 1;
        }
        delete members[key][last];
        nodes[node].slot = 0;
        g.count = last;
        g.weightSum -= uint64(weight);
        if (last == 0) {
            uint256 pos = g.activeSlot - 1;
            uint256 end = activeGroups.length - 1;
            if (pos != end) {
                bytes32 movedKey = activeGroups[end];
                activeGroups[pos] = movedKey;
                groups[movedKey].activeSlot = uint32(pos + 1);
            }
            activeGroups.pop();
            g.activeSlot = 0;
        }
    }

    // ------------------------------------------------------------------ leaving and payments

    /// Moves the absence penalty (at most the whole stake) from the node's stake to the treasury.
    function _penalize(address node, NodeInfo storage n) private {
        uint256 stake = n.stake;
        uint256 amount = absencePenalty < stake ? absencePenalty : stake;
        if (amount == 0) return;
        n.stake = uint96(stake - amount);
        totalStaked -= amount;
        address to = treasury;
        emit NodePenalized(node, amount, to);
        _send(to, amount);
    }

    /// Removes a node that is not indexed as available and returns its stake.
    function _leave(address node) private {
        uint256 amount = nodes[node].stake;
        totalStaked -= amount;
        delete nodes[node];
        _unjoin(node);
        emit NodeQuit(node, amount);
        _send(node, amount);
    }

    function _unjoin(address node) private {
        Group storage g = groups[nodeGroup[node]];
        uint32 joined = g.joined - 1;
        g.joined = joined;
        if (joined == 0) groupCount -= 1;
    }

    /// Pushes a payment with a bounded gas stipend; if the receiver reverts the amount is kept for withdraw().
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
