"""The seed's headline model on two labels: more retweets, and more likes, than the median?

  ./launch.sh headline_engagement                 # 5 epochs, a few minutes on 2 CPU cores
  ./launch.sh headline_engagement --config.heads.main.kind=binary_softmax

The headline experiment's model unchanged (Embedding(512) -> LSTM(32) -> aux
output; [LSTM, 5 extra numbers] -> 3 x Dense(64, relu) -> main output;
weights 1.0 and 0.2; RMSprop; batch 32), but both outputs predict the
two-label target `engagement`: retweets above the train median, likes above
the train median (dslabs trump_tweets, 80/10/10 split by seed 0), so that
the output designs can be compared on multi-label tweets
(`./launch.sh compare_heads`). The headline experiment keeps the seed's
one-label target. 5,200,676 parameters.
"""

from experiments import headline


def get_config():
  c = headline.get_config()
  c.heads.main.target = 'engagement'
  c.heads.aux.target = 'engagement'
  return c
